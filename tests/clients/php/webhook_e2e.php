<?php

/*
 * webhook_e2e.php -- Wsproxy\Webhook::verify() against webhooks the real server sent ([events],
 * docs/events.md). The receiver is the webhook example of clients/php/README.md, taken from the
 * README as it stands, run by PHP's built-in web server (HTTP target) and, when php-fpm8.2 is
 * installed, by php-fpm (FastCGI target: the headers come as $_SERVER HTTP_X_WSPROXY_*). Its
 * vendor/autoload.php is a stub made here: the library's autoloader plus a handle_event() that
 * appends each event to events.log; refusals go to PHP's error_log (refused.log). Included by run.php.
 */

declare(strict_types=1);

const EVENTS_SECRET = 'php-events-secret-0123456789';
const E2E_TYPES = ['session.opened', 'session.closed', 'user.online', 'user.offline', 'message.push'];

/** The PHP code block under "## Webhooks" in clients/php/README.md. */
function readme_receiver(): string
{
    $readme = (string) file_get_contents(ROOT . '/clients/php/README.md');
    $at = strpos($readme, "\n## Webhooks");
    check($at !== false, 'the README has a Webhooks section');
    check((bool) preg_match('/```php\n(<\?php\n.*?)```/s', substr($readme, $at), $m), 'the section starts with a <?php example');
    return $m[1];
}

/** A directory with the README receiver (receiver.php) and its stub vendor/autoload.php. */
function receiver_dir(): string
{
    $dir = sys_get_temp_dir() . '/wsp-php-hook-' . bin2hex(random_bytes(4));
    mkdir($dir . '/vendor', 0755, true);
    chmod($dir, 0755);
    file_put_contents($dir . '/receiver.php', readme_receiver());
    $src = var_export(realpath(ROOT . '/clients/php/src'), true);
    file_put_contents($dir . '/vendor/autoload.php', <<<PHP
        <?php
        spl_autoload_register(static function (string \$class): void {
            if (str_starts_with(\$class, 'Wsproxy\\\\')) {
                require $src . '/' . str_replace('\\\\', '/', substr(\$class, 8)) . '.php';
            }
        });
        function handle_event(array \$event): void
        {
            file_put_contents(dirname(__DIR__) . '/events.log', json_encode(\$event) . "\\n", FILE_APPEND | LOCK_EX);
        }
        PHP);
    return $dir;
}

function remove_dir(string $dir): void
{
    foreach (new RecursiveIteratorIterator(new RecursiveDirectoryIterator($dir, FilesystemIterator::SKIP_DOTS),
        RecursiveIteratorIterator::CHILD_FIRST) as $f) {
        $f->isDir() ? rmdir($f->getPathname()) : unlink($f->getPathname());
    }
    rmdir($dir);
}

/** @return list<array<string, mixed>> the events the receiver took */
function received_events(string $dir): array
{
    $log = @file_get_contents($dir . '/events.log');
    return $log ? array_map(fn ($l) => json_decode($l, true), explode("\n", rtrim($log))) : [];
}

function refusals(string $dir): string
{
    return (string) @file_get_contents($dir . '/refused.log');
}

/** A chat session that opens, gets a push, and closes: all of E2E_TYPES, then checks what arrived. */
function cause_and_check_events(WspServer $srv, string $dir, string $user): array
{
    $api = new Wsproxy\Client($srv->apiUrl(), API_KEY, timeout: 5.0);
    $l = new Listener($srv, $user);
    try {
        $r = $api->pushToUser($user, ['text' => 'hello'], cid: "$user-1");
        $l->frame(fn ($f) => $f['type'] === 'msg' && $f['id'] === $r->id, 'the push');
    } finally {
        $l->stop();
    }
    $events = wait_for(function () use ($dir, $srv) {
        /* the server retries a refused batch: fail at the first refusal, saying why */
        same('', refusals($dir), 'the receiver refused a batch the server sent; server log: ' . $srv->log() . "\nrefusal");
        $ev = received_events($dir);
        return array_diff(E2E_TYPES, array_column($ev, 'type')) === [] ? $ev : null;
    }, 'every event type at the receiver', 15.0);
    same('', refusals($dir), 'the receiver refused nothing the server sent');
    $ids = array_column($events, 'id');
    same(count($ids), count(array_unique($ids)), 'event ids are unique');
    check(array_filter($ids, fn ($id) => !is_int($id) || $id < 1) === [], 'ids are positive integers');
    $types = array_column($events, 'type');
    sort($types);
    $want = E2E_TYPES;
    sort($want);
    same($want, $types, 'each type once');
    foreach ($events as $e) {
        same([$user, 1], [$e['user'], $e['attempt']], "{$e['type']}: its user, first attempt");
        check(is_int($e['time_ms']) && abs($e['time_ms'] - microtime(true) * 1000) < 60000, "{$e['type']}: time_ms is now");
    }
    $by = array_column($events, null, 'type');
    same([(string) $r->id, $user, ['text' => 'hello']], [$by['message.push']['data']['id'], $by['message.push']['data']['to'],
        $by['message.push']['data']['body']], 'the push event');
    same($by['session.opened']['data']['session'], $by['session.closed']['data']['session'], 'one session opened and closed');
    same('client_close', $by['session.closed']['data']['reason'], 'closed by the client');
    $sorted = $ids;
    sort($sorted);
    same($sorted, $ids, 'in id order (one user)');
    return $events;
}

/** Posts $body to the receiver with the given headers; returns the HTTP status. */
function post_hook(string $url, string $body, array $headers): int
{
    $ch = curl_init($url);
    curl_setopt_array($ch, [CURLOPT_POST => true, CURLOPT_POSTFIELDS => $body, CURLOPT_RETURNTRANSFER => true,
        CURLOPT_TIMEOUT => 5, CURLOPT_HTTPHEADER => ['Content-Type: application/json', ...$headers]]);
    curl_exec($ch);
    $status = curl_getinfo($ch, CURLINFO_RESPONSE_CODE);
    curl_close($ch);
    return $status;
}

function webhook_e2e_tests(Runner $t, string $bin): void
{
    $events = ['secret' => EVENTS_SECRET, 'types' => implode(',', E2E_TYPES), 'offline_delay' => '200ms',
        'retry_initial' => '100ms', 'retry_max' => '400ms', 'timeout' => '2s'];

    $t->test('webhook end to end: the README receiver under php -S verifies what the server sent', function (Runner $t) use ($bin, $events) {
        $dir = receiver_dir();
        $t->defer(fn () => remove_dir($dir));
        $port = free_port();
        putenv('WSPROXY_EVENTS_SECRET=' . EVENTS_SECRET);   /* inherited by php -S */
        $php = new Child([PHP_BINARY, '-d', 'log_errors=1', '-d', "error_log=$dir/refused.log", '-d', 'display_errors=0',
            '-S', "127.0.0.1:$port", "$dir/receiver.php"], "$dir/php-s.log", $dir);
        $t->defer(fn () => $php->stop());
        putenv('WSPROXY_EVENTS_SECRET');
        wait_for(fn () => @fsockopen('127.0.0.1', $port), 'php -S to listen');

        $srv = (new WspServer(['events' => ['target' => "http://127.0.0.1:$port/hook"] + $events]))->start($bin);
        $t->defer(fn () => $srv->stop());
        cause_and_check_events($srv, $dir, 'hook-http');

        /* requests of our own: signed as the server signs (ms timestamp), then tampered ones */
        $url = "http://127.0.0.1:$port/hook";
        $body = json_encode(['time_ms' => (int) (microtime(true) * 1000), 'events' => [['id' => 999999, 'type' => 'user.online',
            'user' => 'own', 'time_ms' => 1, 'attempt' => 1, 'data' => ['user' => 'own']]]]);
        $sign = fn (string $ts, string $b, string $key = EVENTS_SECRET) => ["X-Wsproxy-Timestamp: $ts",
            'X-Wsproxy-Signature: ' . hash_hmac('sha256', "$ts.$b", $key)];
        $now = (string) (int) (microtime(true) * 1000);
        $n = count(received_events($dir));
        same(204, post_hook($url, $body, $sign($now, $body)), 'a request signed like the server\'s is taken');
        same([$n + 1, 'own'], [count(received_events($dir)), received_events($dir)[$n]['user']], 'and handled');
        $tampered = str_replace('"own"', '"0wn"', $body);
        same(401, post_hook($url, $tampered, $sign($now, $body)), 'a tampered body');
        same(401, post_hook($url, $body, $sign($now, $body, 'wrong-secret')), 'a wrong secret');
        $old = (string) ((int) $now - 301000);
        same(401, post_hook($url, $body, $sign($old, $body)), 'a timestamp 301 s old');
        same(401, post_hook($url, $body, []), 'no signature headers');
        same($n + 1, count(received_events($dir)), 'nothing refused was handled');
        $refused = refusals($dir);
        same(4, substr_count($refused, 'wsproxy webhook refused'), "four refusals logged:\n$refused");
        check(substr_count($refused, 'does not match') === 2 && str_contains($refused, 'old'), "why:\n$refused");
    });

    $fpm = '/usr/sbin/php-fpm8.2';
    if (!is_executable($fpm)) {
        echo "# skip webhook end to end over FastCGI: $fpm is not installed (scripts/deps.sh test)\n";
        return;
    }
    $t->test('webhook end to end: the README receiver under php-fpm (FastCGI, $_SERVER headers)', function (Runner $t) use ($bin, $events, $fpm) {
        $dir = receiver_dir();
        $t->defer(fn () => remove_dir($dir));
        $secret = EVENTS_SECRET;
        file_put_contents("$dir/php-fpm.conf", <<<INI
            [global]
            pid = $dir/fpm.pid
            error_log = $dir/fpm.log
            daemonize = no
            [events]
            listen = $dir/fpm.sock
            pm = static
            pm.max_children = 2
            clear_env = yes
            env[WSPROXY_EVENTS_SECRET] = $secret
            php_admin_value[error_log] = $dir/refused.log
            php_admin_flag[log_errors] = on
            INI);
        $fpmProc = new Child([$fpm, '-n', '-y', "$dir/php-fpm.conf", '-R', '-F'], "$dir/fpm-out.log", $dir);
        $t->defer(fn () => $fpmProc->stop());
        wait_for(fn () => file_exists("$dir/fpm.sock"), 'the php-fpm socket');

        $srv = (new WspServer(['events' => ['target' => "fastcgi:unix:$dir/fpm.sock:$dir/receiver.php", 'pool' => '2'] + $events]))
            ->start($bin);
        $t->defer(fn () => $srv->stop());
        cause_and_check_events($srv, $dir, 'hook-fcgi');
        check(!str_contains($srv->log(), 'HTTP 401') && !str_contains($srv->log(), 'Status 401'), 'no refusal in the server log');
    });
}
