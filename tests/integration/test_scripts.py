"""scripts/test.sh's summary: pytest's passed/failed/skipped counts and the skip reasons, parsed
from a real pytest run (sourcing test.sh defines its functions without running any suite)."""
import os
import subprocess

from wsp import ROOT

SAMPLE = '''import pytest

@pytest.mark.skipif(True, reason="needs root to run wsctl as another user")
def test_a():
    pass

@pytest.mark.parametrize("n", [1, 2])
def test_b(n):
    pytest.skip("no nginx: apt install nginx")

def test_c():
    pass

def test_d():
    assert False
'''


def test_summary_counts_skips_and_lists_their_reasons(tmp_path):
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    script = f'''
source {ROOT}/scripts/test.sh
out=$(cd {tmp_path} && "${{PYTEST[@]}}" test_sample.py 2>&1)
read -r p f s < <(echo "$out" | pytest_counts)
record sample "$p" "$f" "$s"
while IFS= read -r reason; do skips+=("sample: $reason"); done < <(echo "$out" | pytest_skip_reasons)
printf '%s\\n' "${{summary[@]}}" "${{skips[@]}}"
'''
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["sample", "1", "passed,", "1", "failed,", "3", "skipped"], lines
    assert sorted(lines[1:]) == [
        "sample: 1x needs root to run wsctl as another user (test_sample.py:3)",
        "sample: 2x no nginx: apt install nginx (test_sample.py:9)",
    ], lines
    assert not os.path.exists(os.path.join(str(tmp_path), "var"))  # sourcing ran no suite
