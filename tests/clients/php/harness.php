<?php

/*
 * harness.php -- what the PHP client tests need besides the library: a PSR-4 autoloader for
 * clients/php/src, the real wsproxy on random loopback ports with a temp config and database
 * (as tests/integration/wsp.py starts it), HS256 tokens, a chat listener (listen.mjs on node's ws),
 * waiting on conditions with deadlines, and a minimal test runner with assertions.
 */

declare(strict_types=1);

const ROOT = __DIR__ . '/../../..';
const SECRET = 'client-test-secret-0123456789abcdef0123';
const API_KEY = 'client-test-api-key-0123456789';

spl_autoload_register(static function (string $class): void {
    if (str_starts_with($class, 'Wsproxy\\')) {
        $file = ROOT . '/clients/php/src/' . str_replace('\\', '/', substr($class, 8)) . '.php';
        if (is_file($file)) {
            require $file;
        }
    }
});

function free_port(): int
{
    $s = stream_socket_server('tcp://127.0.0.1:0');
    $port = (int) substr(strrchr(stream_socket_get_name($s, false), ':'), 1);
    fclose($s);
    return $port;
}

function b64url(string $s): string
{
    return rtrim(strtr(base64_encode($s), '+/', '-_'), '=');
}

function make_token(string $sub, int $expIn = 3600): string
{
    $now = time();
    $signing = b64url(json_encode(['alg' => 'HS256', 'typ' => 'JWT'])) . '.'
        . b64url(json_encode(['sub' => $sub, 'iat' => $now, 'exp' => $now + $expIn]));
    return $signing . '.' . b64url(hash_hmac('sha256', $signing, SECRET, true));
}

/** Calls $cond until it returns something truthy (returned) or the deadline passes (exception). */
function wait_for(callable $cond, string $what, float $timeout = 10.0): mixed
{
    $deadline = microtime(true) + $timeout;
    while (true) {
        $v = $cond();
        if ($v) {
            return $v;
        }
        if (microtime(true) > $deadline) {
            throw new RuntimeException("timed out after {$timeout}s waiting for $what");
        }
        usleep(10000);
    }
}

/** A child process with pipes; ended (stdin closed, then SIGTERM, then SIGKILL) by stop(). */
final class Child
{
    /** @var resource */
    private $proc;
    /** @var array<int, resource> */
    private array $pipes;
    private string $buffer = '';

    /** @param list<string> $argv */
    public function __construct(array $argv, ?string $logFile = null, ?string $cwd = null)
    {
        $out = $logFile === null ? ['pipe', 'w'] : ['file', $logFile, 'a'];
        $err = $logFile === null ? ['file', '/dev/null', 'a'] : ['file', $logFile, 'a'];
        $proc = proc_open($argv, [0 => ['pipe', 'r'], 1 => $out, 2 => $err], $pipes, $cwd);
        if (!is_resource($proc)) {
            throw new RuntimeException('cannot start ' . implode(' ', $argv));
        }
        $this->proc = $proc;
        $this->pipes = $pipes;
        if (isset($pipes[1])) {
            stream_set_blocking($pipes[1], false);
        }
    }

    public function running(): bool
    {
        return proc_get_status($this->proc)['running'];
    }

    /** The next line of stdout, or null at the deadline (or at its end). */
    public function readLine(float $deadline): ?string
    {
        while (($nl = strpos($this->buffer, "\n")) === false) {
            $left = $deadline - microtime(true);
            if ($left <= 0 || feof($this->pipes[1])) {
                return null;
            }
            $r = [$this->pipes[1]];
            $w = $e = null;
            if (stream_select($r, $w, $e, 0, (int) min(200000, $left * 1e6)) > 0) {
                $this->buffer .= (string) fread($this->pipes[1], 65536);
            }
        }
        $line = substr($this->buffer, 0, $nl);
        $this->buffer = substr($this->buffer, $nl + 1);
        return $line;
    }

    /** Writes a line to its stdin. */
    public function writeLine(string $line): void
    {
        fwrite($this->pipes[0], $line . "\n");
        fflush($this->pipes[0]);
    }

    public function signal(int $sig): void
    {
        proc_terminate($this->proc, $sig);
    }

    public function stop(): void
    {
        if (isset($this->pipes[0]) && is_resource($this->pipes[0])) {
            fclose($this->pipes[0]);
        }
        $deadline = microtime(true) + 5;
        $sent = false;
        while ($this->running()) {
            if (!$sent && microtime(true) > $deadline - 4) {
                $this->signal(15);
                $sent = true;
            }
            if (microtime(true) > $deadline) {
                $this->signal(9);
                break;
            }
            usleep(10000);
        }
        proc_close($this->proc);
    }
}

/** The real wsproxy, with its own temp directory. */
final class WspServer
{
    public readonly string $dir;
    public readonly int $port;
    public readonly int $apiPort;
    private ?Child $child = null;

    /** @param array<string, array<string, string>> $sections merged over the test defaults */
    public function __construct(array $sections = [])
    {
        $this->dir = sys_get_temp_dir() . '/wsp-php-' . bin2hex(random_bytes(4));
        mkdir($this->dir);
        $this->port = free_port();
        $this->apiPort = free_port();
        $conf = [
            'server' => ['listen' => "127.0.0.1:{$this->port}", 'static_dir' => '', 'close_timeout' => '2s', 'drain_timeout' => '3s'],
            'auth' => ['jwt_secret' => SECRET],
            'store' => ['path' => $this->dir . '/wsproxy.db'],
            'api' => ['listen' => "127.0.0.1:{$this->apiPort}", 'keys' => API_KEY],
            'limits' => ['rate' => '0'],
            'rooms' => ['open' => '*'], // access control: tests/integration/test_rooms.py
            'log' => ['level' => 'info'],
        ];
        foreach ($sections as $sec => $kv) {
            $conf[$sec] = array_merge($conf[$sec] ?? [], $kv);
        }
        $ini = '';
        foreach ($conf as $sec => $kv) {
            $ini .= "[$sec]\n";
            foreach ($kv as $k => $v) {
                $ini .= "$k = $v\n";
            }
        }
        file_put_contents($this->dir . '/wsproxy.ini', $ini);
    }

    public function apiUrl(): string
    {
        return "http://127.0.0.1:{$this->apiPort}";
    }

    public function wsUrl(): string
    {
        return "ws://127.0.0.1:{$this->port}/ws";
    }

    public function start(string $bin): self
    {
        $this->child = new Child([$bin, '--config', $this->dir . '/wsproxy.ini'], $this->dir . '/wsproxy.log', $this->dir);
        wait_for(function () {
            if (!$this->child->running()) {
                throw new RuntimeException("wsproxy exited at start:\n" . $this->log());
            }
            $s = @stream_socket_client("tcp://127.0.0.1:{$this->apiPort}", $errno, $errstr, 1);
            if (!$s) {
                return false;
            }
            fwrite($s, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            $ok = str_starts_with((string) fread($s, 64), 'HTTP/1.1 200');
            fclose($s);
            return $ok;
        }, 'wsproxy to answer /healthz');
        return $this;
    }

    public function log(): string
    {
        return (string) @file_get_contents($this->dir . '/wsproxy.log');
    }

    public function stop(): void
    {
        $this->child?->stop();
        $this->child = null;
        if (is_dir($this->dir)) {
            array_map('unlink', glob($this->dir . '/*') ?: []);
            rmdir($this->dir);
        }
    }
}

/** A chat connection of one user (listen.mjs), acking what it gets; frames are read as they come. */
final class Listener
{
    private Child $child;
    /** @var list<array<string, mixed>> */
    public array $frames = [];

    /** Connects $user, joins $rooms, and returns once the welcome and every "joined" are in. */
    public function __construct(WspServer $srv, public readonly string $user, array $rooms = [])
    {
        $argv = ['node', __DIR__ . '/listen.mjs', $srv->wsUrl(), make_token($user), ...$rooms];
        $this->child = new Child($argv);
        $this->frame(fn ($f) => $f['type'] === 'welcome', 'the welcome');
        foreach ($rooms as $room) {
            $this->frame(fn ($f) => $f['type'] === 'joined' && $f['room'] === $room, "joining $room");
        }
    }

    /** The first frame received (so far or within the timeout) that $match accepts. */
    public function frame(callable $match, string $what, float $timeout = 5.0): array
    {
        $deadline = microtime(true) + $timeout;
        for ($i = 0;; $i++) {
            while ($i >= count($this->frames)) {
                $line = $this->child->readLine($deadline);
                if ($line === null) {
                    throw new RuntimeException("{$this->user}: no frame for $what within {$timeout}s; got "
                        . json_encode($this->frames));
                }
                $this->frames[] = json_decode($line, true);
            }
            if ($match($this->frames[$i])) {
                return $this->frames[$i];
            }
        }
    }

    /** Sends a chat frame (listen.mjs sends each stdin line). */
    public function send(array $frame): void
    {
        $this->child->writeLine(json_encode($frame));
    }

    public function stop(): void
    {
        $this->child->stop();
    }
}

/* ---------- a minimal test runner ---------- */

final class Failed extends RuntimeException
{
}

function check(bool $cond, string $what): void
{
    if (!$cond) {
        throw new Failed($what);
    }
}

function same(mixed $expected, mixed $actual, string $what): void
{
    if ($expected !== $actual) {
        throw new Failed("$what: expected " . var_export($expected, true) . ', got ' . var_export($actual, true));
    }
}

/** Runs $fn and returns what it threw, which must be a $class. */
function throws(string $class, callable $fn, string $what): Throwable
{
    try {
        $fn();
    } catch (Throwable $e) {
        if ($e instanceof $class) {
            return $e;
        }
        throw new Failed("$what: expected $class, got " . get_class($e) . ': ' . $e->getMessage());
    }
    throw new Failed("$what: expected $class, nothing was thrown");
}

final class Runner
{
    private int $passed = 0;
    private int $failed = 0;
    /** @var list<callable> */
    private array $cleanups = [];

    /** Registers something to undo when the current test ends, pass or fail. */
    public function defer(callable $fn): void
    {
        $this->cleanups[] = $fn;
    }

    public function test(string $name, callable $fn): void
    {
        $started = microtime(true);
        try {
            $fn($this);
            $this->passed++;
            printf("ok %d - %s (%.0f ms)\n", $this->passed + $this->failed, $name, (microtime(true) - $started) * 1000);
        } catch (Throwable $e) {
            $this->failed++;
            printf("not ok %d - %s\n  %s: %s\n  at %s:%d\n", $this->passed + $this->failed, $name,
                get_class($e), $e->getMessage(), $e->getFile(), $e->getLine());
        } finally {
            foreach (array_reverse($this->cleanups) as $cleanup) {
                try {
                    $cleanup();
                } catch (Throwable $e) {
                    printf("  cleanup failed: %s\n", $e->getMessage());
                }
            }
            $this->cleanups = [];
        }
    }

    /** Prints the closing line run.sh reads and returns the exit status. */
    public function finish(): int
    {
        printf("%d passed, %d failed\n", $this->passed, $this->failed);
        return $this->failed === 0 ? 0 : 1;
    }
}
