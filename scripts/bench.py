#!/usr/bin/env python3
"""make bench: RFUNC.FCALL vs the built-in FCALL, side by side on one server, as ratios.

One valkey-server (Valkey 9.1.2 by default, VALKEY_SERVER overrides) with rfunc loaded; the same library is
loaded into the built-in and into rfunc. With two CPUs or more, the server runs on CPU 0 and valkey-benchmark on
CPU 1. valkey-benchmark (-c 50 -P 16) runs each workload for about BENCH_SECONDS seconds, built-in and rfunc
back to back (ABBA order), for BENCH_ROUNDS rounds; the table shows the median requests/s of each and the median
of the rounds' ratios rfunc / built-in (a round's two runs share the machine's conditions of the moment). A
control row runs the built-in against itself the same way: its distance from 1.00 is the noise of the machine.

Wall-clock figures on a shared VM move by tens of percent from one minute to the next, so the same workloads are
also counted in instructions: a second server runs under callgrind and each workload's server-side instructions
per call (network reading and writing included, the kernel not) are compared, built-in / rfunc
(BENCH_CALLGRIND=0 skips it; needs valgrind).

Then DUMP / RESTORE of the 2000-function vector, RDB save + load with 1000 libraries, and the memory of 1000
libraries, each as a ratio (>= 1.0: rfunc is as good or better).
"""

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVER = os.environ.get("VALKEY_SERVER", os.path.join(ROOT, ".cache/servers/9.1.2/valkey-server"))
MODULE = os.environ.get("RFUNC_MODULE", os.path.join(ROOT, "target/release/librfunc.so"))
BENCHMARK = os.environ.get("VALKEY_BENCHMARK", shutil.which("valkey-benchmark") or "/usr/bin/valkey-benchmark")
SECONDS = float(os.environ.get("BENCH_SECONDS", "5"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
CALLGRIND = os.environ.get("BENCH_CALLGRIND", "1") != "0"
# Server on CPU 0, client on CPU 1, when there are two CPUs and taskset.
PIN = (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
SERVER_PIN = ["taskset", "-c", "0"] if PIN else []
CLIENT_PIN = ["taskset", "-c", "1"] if PIN else []

LIBRARY = """#!lua name=bench
server.register_function('ret1', function() return 1 end)
server.register_function('get1', function(k) return server.call('get', k[1]) end)
server.register_function('set1', function(k, a) return server.call('set', k[1], a[1]) end)
server.register_function('hsh', function(k, a) server.call('hset', k[1], a[1], a[2]) return server.call('hget', k[1], a[1]) end)
server.register_function('loop', function() local x = 0 for i = 1, 1000 do x = x + i end return x end)
server.register_function('arr', function() local t = {} for i = 1, 100 do t[i] = i end return t end)
server.register_function{function_name='getro', callback=function(k) return server.call('get', k[1]) end, flags={'no-writes'}}
server.register_function('get100', function(k) local r for i = 1, 100 do r = server.call('get', k[1]) end return r end)
server.register_function('ping1', function() return server.call('ping') end)
"""

WORKLOADS = [
    ("return 1", ["ret1", "0"], False),
    ("GET one key", ["get1", "1", "bench:k"], False),
    ("SET one key", ["set1", "1", "bench:k", "v"], False),
    ("HSET + HGET", ["hsh", "1", "bench:h", "f", "v"], False),
    ("1000-iteration loop", ["loop", "0"], False),
    ("100-element array", ["arr", "0"], False),
    ("FCALL_RO of a read", ["getro", "1", "bench:k"], True),
]

# Not in the list, not counted: what one server.call costs when everything is hot (100 per FCALL), and
# one call with no argument and a status reply (the call machinery alone).
DIAGNOSTICS = [
    ("100 GETs in one call", ["get100", "1", "bench:k"], False),
    ("PING, nothing else", ["ping1", "0"], False),
]


class Conn:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port))
        self.buf = b""

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.s.recv(1 << 20)
            if not chunk:
                raise EOFError("server closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _read(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind in (b"+", b":"):
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self.buf += self.s.recv(1 << 20)
            data, self.buf = self.buf[:n], self.buf[n + 2:]
            return data
        if kind == b"*":
            return [self._read() for _ in range(int(rest))]
        raise RuntimeError("unexpected reply " + repr(line))

    def call(self, *args):
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.s.sendall(out)
        return self._read()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(workdir, wrapper=(), wait=10.0):
    port = free_port()
    proc = subprocess.Popen(
        list(wrapper) + [SERVER, "--port", str(port), "--bind", "127.0.0.1", "--dir", workdir, "--save", "", "--appendonly", "no",
         "--enable-debug-command", "yes", "--logfile", os.path.join(workdir, "server.log"), "--loadmodule", MODULE],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + wait
    while time.time() < deadline:
        try:
            c = Conn(port)
            c.call("PING")
            return proc, port
        except (OSError, EOFError, RuntimeError):
            if proc.poll() is not None:
                sys.exit("valkey-server exited:\n" + open(os.path.join(workdir, "server.log")).read())
            time.sleep(0.05)
    sys.exit("valkey-server did not start")


def benchmark(port, cmd, requests, clients=50, pipeline=16):
    out = subprocess.run(CLIENT_PIN + [BENCHMARK, "-p", str(port), "-c", str(clients), "-P", str(pipeline),
                                       "-n", str(requests), "--csv"] + cmd,
                         capture_output=True, text=True, check=True).stdout
    line = [l for l in out.splitlines() if l.strip()][-1]
    return float(line.split(",")[1].strip('"'))


def median_time(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def paired_times(builtin, rfunc, rounds):
    """Times the two sides in alternation (ABBA), one of each per round, so that drift of the machine reaches
    both alike: (median built-in seconds, median rfunc seconds, median of the rounds' ratios built-in / rfunc).
    `builtin` and `rfunc` return the seconds of one run."""
    b, r = [], []
    for rnd in range(rounds):
        if rnd % 2 == 0:
            b.append(builtin())
            r.append(rfunc())
        else:
            r.append(rfunc())
            b.append(builtin())
    return statistics.median(b), statistics.median(r), statistics.median(x / y for x, y in zip(b, r))


def load_bench_data(c):
    c.call("FUNCTION", "LOAD", "REPLACE", LIBRARY)
    c.call("RFUNC.LOAD", "REPLACE", LIBRARY)
    c.call("SET", "bench:k", "v")
    c.call("HSET", "bench:h", "f", "v")


def commands(args, ro):
    return ["FCALL_RO" if ro else "FCALL"] + args, ["RFUNC.FCALL_RO" if ro else "RFUNC.FCALL"] + args


def rows(control_title, control_other, workloads=None):
    """(title, built-in command, rfunc command, is_control) of each workload, then a control row: the built-in's
    GET function against `control_other`, which does the same work (how far a ratio moves on this machine with
    nothing to tell the two sides apart). No control row when `control_title` is None."""
    for title, args, ro in workloads or WORKLOADS:
        yield (title, *commands(args, ro), False)
    if control_title:
        yield (control_title, ["FCALL", "get1", "1", "bench:k"], control_other, True)


def requests_for(port, cmd, seconds, floor):
    """A request count that keeps valkey-benchmark on `cmd` busy for about `seconds`."""
    return max(floor, int(benchmark(port, cmd, floor) * seconds))


def throughput(port):
    print(f"{'workload':<22}{'built-in req/s':>16}{'rfunc req/s':>16}{'ratio':>8}")
    ratios = []
    for title, builtin_cmd, rfunc_cmd, control in rows("control: FCALL/FCALL", ["FCALL", "get1", "1", "bench:k"]):
        requests = requests_for(port, builtin_cmd, SECONDS, 50000)
        b, r, rr = [], [], []
        for rnd in range(ROUNDS):
            order = [("b", builtin_cmd), ("r", rfunc_cmd)]
            got = {}
            for which, cmd in (order if rnd % 2 == 0 else order[::-1]):
                got[which] = benchmark(port, cmd, requests)
            b.append(got["b"])
            r.append(got["r"])
            rr.append(got["r"] / got["b"])
        ratio = statistics.median(rr)
        if not control:
            ratios.append(ratio)
        print(f"{title:<22}{statistics.median(b):>16,.0f}{statistics.median(r):>16,.0f}{ratio:>8.2f}")
    return ratios


def server_time(c, port, workloads=None, heading="server usec per call"):
    """Server time per call, built-in and rfunc running at the same time (two valkey-benchmark processes against
    one server), from INFO commandstats: both sides see the same machine at every instant. With `workloads`:
    those rows and no control row."""
    print(f"\n{heading:<22}{'built-in':>16}{'rfunc':>16}{'ratio':>8}")
    ratios = []
    control_title = None if workloads else "control: FCALL/FCALL_RO"
    for title, builtin_cmd, rfunc_cmd, control in rows(control_title, ["FCALL_RO", "getro", "1", "bench:k"],
                                                       workloads):
        requests = requests_for(port, builtin_cmd, SECONDS / 2, 20000)
        c.call("CONFIG", "RESETSTAT")
        procs = [subprocess.Popen(CLIENT_PIN + [BENCHMARK, "-p", str(port), "-c", "25", "-P", "16", "-n",
                                                str(requests), "-q"] + cmd,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for cmd in (builtin_cmd, rfunc_cmd)]
        for p in procs:
            p.wait()
        stats = {}
        for line in c.call("INFO", "commandstats").decode().splitlines():
            if line.startswith("cmdstat_"):
                name, fields = line[len("cmdstat_"):].split(":", 1)
                stats[name] = dict(f.split("=") for f in fields.split(","))
        ub = float(stats[builtin_cmd[0].lower()]["usec_per_call"])
        ur = float(stats[rfunc_cmd[0].lower()]["usec_per_call"])
        if not control:
            ratios.append(ub / ur)
        print(f"{title:<22}{ub:>16.3f}{ur:>16.3f}{ub / ur:>8.2f}")
    return ratios


def callgrind_counts():
    """Server-side instructions per call of each workload, under callgrind (deterministic, unlike wall time)."""
    workdir = tempfile.mkdtemp(prefix="rfunc-bench-cg-")
    out = os.path.join(workdir, "cg.out")
    proc, port = start_server(workdir, ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out + ".%n"],
                              wait=120.0)
    try:
        c = Conn(port)
        load_bench_data(c)
        print(f"\n{'instructions per call':<22}{'built-in':>16}{'rfunc':>16}{'ratio':>8}")
        ratios = []

        def count(cmd, calls):
            subprocess.run(["callgrind_control", "-z", str(proc.pid)], capture_output=True, check=True)
            benchmark(port, cmd, calls, clients=1, pipeline=50)
            before = set(os.listdir(workdir))
            subprocess.run(["callgrind_control", "-d", str(proc.pid)], capture_output=True, check=True)
            new = [f for f in os.listdir(workdir) if f.startswith("cg.out") and f not in before]
            dump = max((os.path.join(workdir, f) for f in new), key=os.path.getmtime)
            for line in open(dump):
                if line.startswith(("summary:", "totals:")):
                    return int(line.split()[1]) / calls
            raise RuntimeError("no totals in " + dump)

        for title, args, ro in WORKLOADS:
            builtin_cmd, rfunc_cmd = commands(args, ro)
            calls = 2000 if title.startswith(("1000-iteration", "100-element")) else 10000
            # Warm both paths (first-call caches) before counting.
            benchmark(port, builtin_cmd, 200, clients=1, pipeline=50)
            benchmark(port, rfunc_cmd, 200, clients=1, pipeline=50)
            ib, ir = count(builtin_cmd, calls), count(rfunc_cmd, calls)
            ratios.append(ib / ir)
            print(f"{title:<22}{ib:>16,.0f}{ir:>16,.0f}{ib / ir:>8.2f}")
        return ratios
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def operations(c):
    print(f"\n{'operation':<40}{'built-in':>12}{'rfunc':>12}{'ratio':>8}")
    ratios = []
    big = open(os.path.join(ROOT, "core/tests/vectors/valkey-9.1.2--big-2000-functions.bin"), "rb").read()
    c.call("FUNCTION", "FLUSH", "SYNC")
    c.call("RFUNC.FLUSH", "SYNC")
    tb, tr, ratio = paired_times(lambda: median_time(lambda: c.call("FUNCTION", "RESTORE", big, "REPLACE"), 1),
                                 lambda: median_time(lambda: c.call("RFUNC.RESTORE", big, "REPLACE"), 1), 9)
    ratios.append(ratio)
    print(f"{'RESTORE 2000-function payload (ms)':<40}{tb * 1e3:>12.2f}{tr * 1e3:>12.2f}{ratio:>8.2f}")
    db, dr, ratio = paired_times(lambda: median_time(lambda: c.call("FUNCTION", "DUMP"), 5),
                                 lambda: median_time(lambda: c.call("RFUNC.DUMP"), 5), 9)
    ratios.append(ratio)
    print(f"{'DUMP 2000-function payload (ms)':<40}{db * 1e3:>12.2f}{dr * 1e3:>12.2f}{ratio:>8.2f}")
    c.call("FUNCTION", "FLUSH", "SYNC")
    c.call("RFUNC.FLUSH", "SYNC")

    libs = [f"#!lua name=lib{i}\nserver.register_function('f{i}', function(k, a) return {{{i}, k[1], a[1]}} end)\n"
            for i in range(1000)]

    def info(conn, section):
        fields = {}
        for line in conn.call("INFO", section).decode().splitlines():
            if ":" in line and not line.startswith("#"):
                k, v = line.split(":", 1)
                fields[k] = v
        return fields

    # RDB save + load (DEBUG RELOAD) with 1000 libraries in one registry, the other empty; the sides take turns.
    def reload_with(load, flush):
        for code in libs:
            c.call(*load, code)
        t = median_time(lambda: c.call("DEBUG", "RELOAD"), 3)
        c.call(*flush, "SYNC")
        return t

    sb, sr, ratio = paired_times(lambda: reload_with(["FUNCTION", "LOAD"], ["FUNCTION", "FLUSH"]),
                                 lambda: reload_with(["RFUNC.LOAD"], ["RFUNC.FLUSH"]), 6)
    ratios.append(ratio)
    print(f"{'RDB save + load, 1000 libraries (ms)':<40}{sb * 1e3:>12.1f}{sr * 1e3:>12.1f}{ratio:>8.2f}")

    # Memory of 1000 libraries, each on a fresh server. The built-in's Lua heap is allocated with libc, outside
    # used_memory, and reported as used_memory_vm_functions (Lua's own count, without malloc's overhead): its
    # figure is the growth of used_memory (registry, code, dictionaries) plus the growth of that heap. rfunc's
    # Lua heap goes through the server's allocator, so its figure is the growth of used_memory alone (Lua
    # heap with malloc's overhead, the registry and the block cache).
    used = []
    for which in ("builtin", "rfunc"):
        wd = tempfile.mkdtemp(prefix="rfunc-bench-mem-")
        p2, port2 = start_server(wd)
        try:
            m = Conn(port2)
            before = info(m, "memory")
            for code in libs:
                if which == "builtin":
                    m.call("FUNCTION", "LOAD", code)
                else:
                    m.call("RFUNC.LOAD", code)
            after = info(m, "memory")
            grown = int(after["used_memory"]) - int(before["used_memory"])
            if which == "builtin":
                grown += int(after["used_memory_vm_functions"]) - int(before["used_memory_vm_functions"])
            used.append(grown)
        finally:
            p2.terminate()
            p2.wait()
            shutil.rmtree(wd, ignore_errors=True)
    used_b, used_r = used
    ratios.append(used_b / used_r)
    print(f"{'memory of 1000 libraries (KiB)':<40}{used_b / 1024:>12.0f}{used_r / 1024:>12.0f}{used_b / used_r:>8.2f}")
    return ratios


def main():
    for path, what in [(SERVER, "server"), (MODULE, "module"), (BENCHMARK, "valkey-benchmark")]:
        if not os.path.exists(path):
            sys.exit(f"{what} not found at {path} (run make build / scripts/setup.sh)")
    workdir = tempfile.mkdtemp(prefix="rfunc-bench-")
    proc, port = start_server(workdir, SERVER_PIN)
    try:
        c = Conn(port)
        version = [l for l in c.call("INFO", "server").decode().splitlines() if l.startswith("valkey_version:")][0]
        load_bench_data(c)
        pinned = "server on CPU 0, client on CPU 1" if PIN else "not pinned"
        print(f"server {version.split(':')[1]}, valkey-benchmark -c 50 -P 16, ~{SECONDS:g} s per run, {ROUNDS} rounds "
              f"(ABBA; medians, ratio = median of the rounds' ratios), {pinned}\n")
        wall = throughput(port)
        timed = server_time(c, port)
        server_time(c, port, DIAGNOSTICS, "diagnostics (uncounted)")
        ops = operations(c)
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)
    counted = []
    if CALLGRIND and shutil.which("valgrind") and shutil.which("callgrind_control"):
        counted = callgrind_counts()
    elif CALLGRIND:
        print("\n(instruction counts skipped: valgrind not installed)")
    print("\nratio: rfunc / built-in for throughput; built-in / rfunc for server time, instructions, times and "
          "memory (>= 1.0 is rfunc as good or better)")
    print(f"lowest throughput ratio: {min(wall):.2f}; lowest server-time ratio: {min(timed):.2f}; "
          f"lowest other ratio: {min(ops + counted):.2f}")


if __name__ == "__main__":
    main()
