#!/usr/bin/env python3
"""make bench: RFUNC.FCALL vs the built-in FCALL, side by side on one server, as ratios.

One valkey-server (Valkey 9.1.2 by default, VALKEY_SERVER overrides) with rfunc loaded; the same library is
loaded into the built-in and into rfunc. valkey-benchmark (-c 50 -P 16) runs each workload for about
BENCH_SECONDS seconds, alternating built-in and rfunc, for BENCH_ROUNDS rounds; the table shows the median
requests/s of each and the ratio rfunc / built-in. Then DUMP / RESTORE of the 2000-function vector, RDB save +
load with 1000 libraries, and the memory of 1000 libraries, each as a ratio (>= 1.0: rfunc is as good or better).
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

LIBRARY = """#!lua name=bench
server.register_function('ret1', function() return 1 end)
server.register_function('get1', function(k) return server.call('get', k[1]) end)
server.register_function('set1', function(k, a) return server.call('set', k[1], a[1]) end)
server.register_function('hsh', function(k, a) server.call('hset', k[1], a[1], a[2]) return server.call('hget', k[1], a[1]) end)
server.register_function('loop', function() local x = 0 for i = 1, 1000 do x = x + i end return x end)
server.register_function('arr', function() local t = {} for i = 1, 100 do t[i] = i end return t end)
server.register_function{function_name='getro', callback=function(k) return server.call('get', k[1]) end, flags={'no-writes'}}
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


def start_server(workdir):
    port = free_port()
    proc = subprocess.Popen(
        [SERVER, "--port", str(port), "--bind", "127.0.0.1", "--dir", workdir, "--save", "", "--appendonly", "no",
         "--enable-debug-command", "yes", "--logfile", os.path.join(workdir, "server.log"), "--loadmodule", MODULE],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            c = Conn(port)
            c.call("PING")
            return proc, port
        except (OSError, EOFError, RuntimeError):
            if proc.poll() is not None:
                sys.exit("valkey-server exited:\n" + open(os.path.join(workdir, "server.log")).read())
            time.sleep(0.05)
    sys.exit("valkey-server did not start")


def benchmark(port, cmd, requests):
    out = subprocess.run([BENCHMARK, "-p", str(port), "-c", "50", "-P", "16", "-n", str(requests), "--csv"] + cmd,
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


def main():
    for path, what in [(SERVER, "server"), (MODULE, "module"), (BENCHMARK, "valkey-benchmark")]:
        if not os.path.exists(path):
            sys.exit(f"{what} not found at {path} (run make build / scripts/setup.sh)")
    workdir = tempfile.mkdtemp(prefix="rfunc-bench-")
    proc, port = start_server(workdir)
    try:
        c = Conn(port)
        version = [l for l in c.call("INFO", "server").decode().splitlines() if l.startswith("valkey_version:")][0]
        c.call("FUNCTION", "LOAD", "REPLACE", LIBRARY)
        c.call("RFUNC.LOAD", "REPLACE", LIBRARY)
        c.call("SET", "bench:k", "v")
        print(f"server {version.split(':')[1]}, valkey-benchmark -c 50 -P 16, ~{SECONDS:g} s per run, "
              f"{ROUNDS} rounds alternating built-in and rfunc (medians)\n")
        print(f"{'workload':<22}{'built-in req/s':>16}{'rfunc req/s':>16}{'ratio':>8}")
        ratios = []
        for title, args, ro in WORKLOADS:
            builtin_cmd = ["FCALL_RO" if ro else "FCALL"] + args
            rfunc_cmd = ["RFUNC.FCALL_RO" if ro else "RFUNC.FCALL"] + args
            # Calibrate the request count for about SECONDS seconds per run.
            probe = benchmark(port, builtin_cmd, 50000)
            requests = max(50000, int(probe * SECONDS))
            b, r = [], []
            for rnd in range(ROUNDS):
                pair = [(builtin_cmd, b), (rfunc_cmd, r)]
                for cmd, acc in (pair if rnd % 2 == 0 else pair[::-1]):
                    acc.append(benchmark(port, cmd, requests))
            mb, mr = statistics.median(b), statistics.median(r)
            ratios.append(mr / mb)
            print(f"{title:<22}{mb:>16,.0f}{mr:>16,.0f}{mr / mb:>8.2f}")

        print(f"\n{'operation':<40}{'built-in':>12}{'rfunc':>12}{'ratio':>8}")
        big = open(os.path.join(ROOT, "core/tests/vectors/valkey-9.1.2--big-2000-functions.bin"), "rb").read()
        c.call("FUNCTION", "FLUSH", "SYNC")
        c.call("RFUNC.FLUSH", "SYNC")
        tb = median_time(lambda: c.call("FUNCTION", "RESTORE", big, "REPLACE"), 5)
        tr = median_time(lambda: c.call("RFUNC.RESTORE", big, "REPLACE"), 5)
        print(f"{'RESTORE 2000-function payload (ms)':<40}{tb * 1e3:>12.2f}{tr * 1e3:>12.2f}{tb / tr:>8.2f}")
        db = median_time(lambda: c.call("FUNCTION", "DUMP"), 20)
        dr = median_time(lambda: c.call("RFUNC.DUMP"), 20)
        print(f"{'DUMP 2000-function payload (ms)':<40}{db * 1e3:>12.2f}{dr * 1e3:>12.2f}{db / dr:>8.2f}")
        c.call("FUNCTION", "FLUSH", "SYNC")
        c.call("RFUNC.FLUSH", "SYNC")

        libs = [f"#!lua name=lib{i}\nserver.register_function('f{i}', function(k, a) return {{{i}, k[1], a[1]}} end)\n"
                for i in range(1000)]

        def mem(conn, field):
            info = conn.call("INFO", "memory").decode()
            return int([l for l in info.splitlines() if l.startswith(field + ":")][0].split(":")[1])

        # RDB save + load (DEBUG RELOAD) with 1000 libraries in one registry, the other empty.
        for code in libs:
            c.call("FUNCTION", "LOAD", code)
        sb = median_time(lambda: c.call("DEBUG", "RELOAD"), 3)
        c.call("FUNCTION", "FLUSH", "SYNC")
        for code in libs:
            c.call("RFUNC.LOAD", code)
        sr = median_time(lambda: c.call("DEBUG", "RELOAD"), 3)
        c.call("RFUNC.FLUSH", "SYNC")
        print(f"{'RDB save + load, 1000 libraries (ms)':<40}{sb * 1e3:>12.1f}{sr * 1e3:>12.1f}{sb / sr:>8.2f}")

        # Memory of 1000 libraries, each on a fresh server: the built-in's Lua VM and function overhead
        # (used_memory_vm_functions + used_memory_functions), rfunc's growth of used_memory (its Lua heap and
        # registry are allocated through the server's allocator).
        used = []
        for which in ("builtin", "rfunc"):
            wd = tempfile.mkdtemp(prefix="rfunc-bench-mem-")
            p2, port2 = start_server(wd)
            try:
                m = Conn(port2)
                if which == "builtin":
                    base = mem(m, "used_memory_vm_functions") + mem(m, "used_memory_functions")
                    for code in libs:
                        m.call("FUNCTION", "LOAD", code)
                    used.append(mem(m, "used_memory_vm_functions") + mem(m, "used_memory_functions") - base)
                else:
                    base = mem(m, "used_memory")
                    for code in libs:
                        m.call("RFUNC.LOAD", code)
                    used.append(mem(m, "used_memory") - base)
            finally:
                p2.terminate()
                p2.wait()
                shutil.rmtree(wd, ignore_errors=True)
        used_b, used_r = used
        print(f"{'memory of 1000 libraries (KiB)':<40}{used_b / 1024:>12.0f}{used_r / 1024:>12.0f}{used_b / used_r:>8.2f}")
        print("\nratio: rfunc / built-in for throughput; built-in / rfunc for times and memory (>= 1.0 is rfunc as good or better)")
        print(f"lowest throughput ratio: {min(ratios):.2f}")
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
