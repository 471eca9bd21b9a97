"""What the Python tests that drive a real tt-host share: a scratch folder
laid out as tt-host expects it, and checks that record a failure and go on,
so one run reports every broken property rather than the first.

    import tt_harness
    t = tt_harness.Harness(work, "restart", plugins={"liborders.so": orders_so})
    t.check(code == 0, "tt-host exits 0")
    t.finish("restart: all checks passed")
"""
import os
import shutil
import sys
import time


def wait_for(pred, timeout=30.0, step=0.02):
    """pred() once it is truthy, polling until `timeout` seconds have passed;
    else its last (falsy) value. For a state another process reaches in its
    own time: the deadline bounds a loaded or sanitized run, it measures
    nothing, and a passing run returns as soon as the state is seen.

        sites = tt_harness.wait_for(lambda: [s for s in callsites() if s["hits"] > 0])
    """
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(step)


class Harness:
    def __init__(self, work, prefix, plugins=None, folders=()):
        # The pid keeps concurrent runs (a test and its sanitizer twin) apart.
        self.root = os.path.join(work, f"{prefix}-{os.getpid()}")
        shutil.rmtree(self.root, ignore_errors=True)
        os.makedirs(self.root)
        self.plugins = os.path.join(self.root, "plugins")
        self.state = os.path.join(self.root, "state")
        if plugins is not None:
            os.makedirs(self.plugins)
            for name, so in plugins.items():
                shutil.copy(so, os.path.join(self.plugins, name))
        for f in folders:
            os.makedirs(os.path.join(self.root, f))
        self.failures = []

    def check(self, cond, what):
        if not cond:
            self.failures.append(what)
            print(f"FAIL: {what}", file=sys.stderr)
        return cond

    def finish(self, success_line, keep_on_failure=False):
        """Exits 1 after any failed check; else removes the scratch folder."""
        if self.failures:
            kept = f"; files kept in {self.root}" if keep_on_failure else ""
            print(f"{len(self.failures)} check(s) failed{kept}", file=sys.stderr)
            if not keep_on_failure:
                shutil.rmtree(self.root, ignore_errors=True)
            sys.exit(1)
        shutil.rmtree(self.root, ignore_errors=True)
        print(success_line)
