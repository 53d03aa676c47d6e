"""Launches N local processes of one program under jax.distributed, for a quick try.

    python -m experiments.local_cluster --num_processes=2 --devices_per_process=2 -- \\
        -m experiments.run --config=configs/smoke.py --workdir=runs/mp \\
        --config.data.data_dir=../shared/data/tfds

Every process gets the program's arguments plus ``--coordinator_address=
127.0.0.1:PORT --num_processes=N --process_id=i`` (a free port is picked), and
``{process_id}`` in an argument is replaced by i. ``--devices_per_process``
fakes that many CPU devices in each process (XLA_FLAGS), so 2 x 2 gives a
4-device agent mesh over two processes. Process 0 prints to this terminal;
process i > 0 writes to ``--log_dir/process_i.log``. The launcher waits for
all of them and exits with the first non-zero exit code (stopping the others).

On several hosts, run ``python -m experiments.run ...`` on each with the same
``--coordinator_address`` (process 0's host:port), ``--num_processes`` and its
own ``--process_id``; see the README.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        print(
            "usage: python -m experiments.local_cluster [options] -- PROGRAM ARGS", file=sys.stderr
        )
        return 2
    cut = argv.index("--")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--num_processes", type=int, default=2)
    p.add_argument("--devices_per_process", type=int, default=0, help="fake CPU devices (0: as is)")
    p.add_argument("--log_dir", default="", help="logs of processes 1..N-1 (default: a temp dir)")
    args = p.parse_args(argv[:cut])
    program = argv[cut + 1 :]
    if args.num_processes < 1 or not program:
        p.error("give --num_processes >= 1 and a program after --")
    log_dir = args.log_dir or tempfile.mkdtemp(prefix="comdml_cluster_")
    os.makedirs(log_dir, exist_ok=True)
    address = f"127.0.0.1:{free_port()}"
    env = dict(os.environ)
    env.setdefault("JAX_PLATFORMS", "cpu")
    if args.devices_per_process:
        flags = env.get("XLA_FLAGS", "").split()
        flags = [f for f in flags if not f.startswith("--xla_force_host_platform_device_count")]
        flags.append(f"--xla_force_host_platform_device_count={args.devices_per_process}")
        env["XLA_FLAGS"] = " ".join(flags)
    procs, logs = [], []
    for i in range(args.num_processes):
        cmd = [sys.executable, *(a.replace("{process_id}", str(i)) for a in program)]
        cmd += [
            f"--coordinator_address={address}",
            f"--num_processes={args.num_processes}",
            f"--process_id={i}",
        ]
        if i == 0:
            procs.append(subprocess.Popen(cmd, env=env))
        else:
            log = open(os.path.join(log_dir, f"process_{i}.log"), "w")  # noqa: SIM115
            logs.append(log)
            procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT))
    if args.num_processes > 1:
        print(
            f"local_cluster: {args.num_processes} processes on {address}; logs of processes "
            f"1..{args.num_processes - 1} in {log_dir}",
            file=sys.stderr,
        )
    code = 0
    try:
        while any(proc.poll() is None for proc in procs):
            failed = [proc.returncode for proc in procs if proc.returncode not in (None, 0)]
            if failed:
                code = failed[0]
                break
            time.sleep(0.2)
        else:
            code = next((proc.returncode for proc in procs if proc.returncode), 0)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for log in logs:
            log.close()
    return code


if __name__ == "__main__":
    sys.exit(main())
