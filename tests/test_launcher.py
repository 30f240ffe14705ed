"""scripts/run_distribute_train_gpu.sh: msrun across nodes (two "nodes" of one process each on this
machine), the launcher choice (msrun by default, mpirun when asked or when msrun is absent) and its
command lines, and one device never touching the communication library."""
import os
import re
import shlex
import signal
import socket
import subprocess
import threading

import pytest

from conftest import REPO, free_port
from datasets import write_digits_folder
from test_train import NO_AUGMENT, SMALL

SCRIPT = os.path.join(REPO, "scripts", "run_distribute_train_gpu.sh")
CONFIG = SMALL[1]


def _fingerprint(log: str, kind: str) -> str:
    return re.search(kind + r" fingerprint (\w+)", log).group(1)


def _pump(source, sink):
    try:
        while data := source.recv(65536):
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def _relay(listen, target):
    """Forward TCP connections from `listen` to `target` (both (host, port)) until the test ends."""
    server = socket.create_server(listen)

    def serve():
        while True:
            client, _ = server.accept()
            try:
                upstream = socket.create_connection(target)
            except OSError:  # the scheduler is not up yet: the worker connects again
                client.close()
                continue
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(source, sink), daemon=True).start()
    threading.Thread(target=serve, daemon=True).start()


def _stop(proc):
    """SIGINT to the launcher's process group: msrun then stops its workers (they run in their own sessions)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def test_two_nodes_of_one_process_each_train_in_sync(tmp_path):
    """msrun starts the scheduler on the node that owns --master_addr, so node 1 is given 127.0.0.2, an
    address this machine does not own, relayed to node 0's scheduler on 127.0.0.1 as a network would
    (with 127.0.0.1 on both, both would start a scheduler on the same port)."""
    data = write_digits_folder(tmp_path / "digits", train_per_class=4, val_per_class=1)
    port = free_port()
    _relay(("127.0.0.2", port), ("127.0.0.1", port))
    args = [*SMALL[2:], "--data_url", data, "--epochs", "1", "--batch_size", "5", *NO_AUGMENT,
            "--with_ema", "false", "--print_loss_every", "1", "--ckpt_root_dir", str(tmp_path / "ckpt"),
            "--best_ckpt_root_dir", str(tmp_path / "best"), "--summary_root_dir", str(tmp_path / "summary")]
    nodes = []
    try:
        for rank in (0, 1):  # each "node" in its own folder with its own logs, as on two machines
            node = tmp_path / f"node{rank}"
            node.mkdir()
            env = dict(os.environ, GLOG_v="3", LOG_DIR=str(node / "logs"))
            nodes.append(subprocess.Popen(
                ["bash", SCRIPT, CONFIG, "--num_devices", "1", "--num_nodes", "2", "--node_rank", str(rank),
                 "--master_addr", f"127.0.0.{rank + 1}", "--master_port", str(port), "--extra", *args],
                cwd=node, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                start_new_session=True))
        outputs = [p.communicate(timeout=300)[0] for p in nodes]
    finally:
        for proc in nodes:
            _stop(proc)
    assert not (tmp_path / "node1" / "logs" / "scheduler.log").exists()  # node 1 is not the master
    logs = [(tmp_path / f"node{rank}" / "logs" / f"worker_{rank}.log").read_text() for rank in (0, 1)]
    for rank, (proc, output, log) in enumerate(zip(nodes, outputs, logs)):
        assert proc.returncode == 0, output[-3000:] + log[-3000:]
        # each rank trained: its weights moved from the (shared, seeded) start
        assert _fingerprint(log, "initial weights") != _fingerprint(log, f"rank {rank}/2: weights")
    assert re.search(r"^epoch 1/1 step 4/4 loss", logs[0], re.M)  # 40 images over 2 ranks x 5: 4 steps
    for kind in ("initial weights", ": weights"):  # same start (seeding) and same end (all-reduce)
        assert _fingerprint(logs[0], kind) == _fingerprint(logs[1], kind), kind
    assert os.listdir(tmp_path / "ckpt")  # rank 0 wrote the checkpoint


def _dry_run(*options, path=None, cwd=None):
    env = dict(os.environ, PATH=path) if path else None
    result = subprocess.run(["bash", SCRIPT, CONFIG, *options, "--dry_run", "--extra", "--device_target", "CPU"],
                            env=env, cwd=cwd, capture_output=True, text=True, timeout=60)
    return result.returncode, shlex.split(result.stdout), result.stderr.strip()


def _fake_mpirun(tmp_path) -> str:
    """A folder with an `mpirun` on it: the script only looks it up (this machine has no OpenMPI)."""
    folder = tmp_path / "fake_bin"
    folder.mkdir(exist_ok=True)
    (folder / "mpirun").write_text("#!/bin/sh\nexit 1\n")
    (folder / "mpirun").chmod(0o755)
    return str(folder)


def test_msrun_is_the_default_and_multi_node_options_reach_it():
    status, command, _ = _dry_run("--num_devices", "4", "--num_nodes", "2", "--node_rank", "1",
                                  "--master_addr", "10.1.2.3", "--master_port", "9123")
    assert status == 0
    assert command[0] == "msrun"
    for flag in ("--worker_num=8", "--local_worker_num=4", "--master_addr=10.1.2.3", "--master_port=9123",
                 "--node_rank=1", "--join=True"):
        assert flag in command
    train = command[command.index(os.path.join(REPO, "train.py")):]
    assert train[1:] == ["--config", CONFIG, "--device_num", "8", "--device_target", "CPU"]


def test_mpirun_when_asked_and_when_msrun_is_absent(tmp_path):
    fake = _fake_mpirun(tmp_path)
    status, command, _ = _dry_run("--num_devices", "2", "--launcher", "mpirun", path=fake + ":" + os.environ["PATH"])
    assert status == 0 and command[:3] == ["mpirun", "-n", "2"]
    assert command[command.index("--map-by") + 1] == "ppr:2:node"
    assert command[command.index("-x") + 1] == "PATH"  # exported to the other nodes
    train = command[command.index(os.path.join(REPO, "train.py")) - 1:]
    assert train == [os.path.join(REPO, ".venv", "bin", "python"), os.path.join(REPO, "train.py"), "--config",
                     CONFIG, "--device_num", "2", "--device_target", "CPU"]

    # a copy of the scripts whose Python environment has no msrun: mpirun is picked without being asked
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    (repo / ".venv" / "bin").mkdir(parents=True)
    os.symlink(os.path.join(REPO, ".venv", "bin", "python"), repo / ".venv" / "bin" / "python")
    for name in ("_common.sh", "run_distribute_train_gpu.sh"):
        (repo / "scripts" / name).write_text(open(os.path.join(REPO, "scripts", name)).read())
    without_msrun = fake + ":/usr/bin:/bin"
    result = subprocess.run(["bash", str(repo / "scripts" / "run_distribute_train_gpu.sh"), CONFIG, "--num_devices",
                             "2", "--num_nodes", "2", "--hostfile", "hosts", "--dry_run"],
                            env=dict(os.environ, PATH=without_msrun), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    command = shlex.split(result.stdout)
    assert command[:3] == ["mpirun", "-n", "4"] and command[command.index("--hostfile") + 1] == "hosts"
    # and neither launcher: one line saying so
    result = subprocess.run(["bash", str(repo / "scripts" / "run_distribute_train_gpu.sh"), CONFIG, "--num_devices",
                             "2"], env=dict(os.environ, PATH="/usr/bin:/bin"), capture_output=True, text=True)
    assert result.returncode == 2 and "neither msrun" in result.stderr and len(result.stderr.splitlines()) == 1


def test_one_device_runs_train_py_without_a_launcher():
    status, command, _ = _dry_run("--num_devices", "1")
    assert status == 0
    assert command[1:] == [os.path.join(REPO, "train.py"), "--config", CONFIG, "--device_num", "1",
                           "--device_target", "CPU"]
    assert os.path.basename(command[0]).startswith("python")


@pytest.mark.parametrize("options, message", [
    (["--num_nodes", "2"], "needs --master_addr"),
    (["--num_nodes", "2", "--node_rank", "2", "--master_addr", "10.0.0.1"], "--node_rank must be in 0..1"),
    (["--node_rank", "1"], "needs --num_nodes"),
    (["--launcher", "horovod"], "--launcher must be msrun or mpirun"),
    (["--hostfile", "hosts"], "--hostfile is mpirun's"),
    (["--num_nodes", "0"], "--num_nodes must be a positive integer"),
])
def test_bad_launcher_options_stop_with_one_line(options, message):
    status, _, stderr = _dry_run("--num_devices", "2", *options)
    assert status == 2 and message in stderr and len(stderr.splitlines()) == 1, stderr


def test_a_single_device_never_initialises_communication(monkeypatch):
    import mindspore as ms
    import mindspore.communication as comm
    from src.config import parse_args
    from src.tools.device import DeviceError, init_distributed

    def refuse(*_):
        raise AssertionError("communication init called")
    monkeypatch.setattr(comm, "init", refuse)
    assert init_distributed(parse_args(["--device_num", "1"])) == (0, 1)
    for name in ("MS_WORKER_NUM", "RANK_TABLE_FILE", "OMPI_COMM_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(DeviceError, match="msrun or mpirun"):
        init_distributed(parse_args(["--device_num", "2"]))

    # under mpirun (OpenMPI's variables) the launch is recognised and the group joined
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    monkeypatch.setattr(comm, "init", lambda *_: None)
    monkeypatch.setattr(comm, "get_group_size", lambda *_: 2)
    monkeypatch.setattr(comm, "get_rank", lambda *_: 1)
    try:
        assert init_distributed(parse_args(["--device_num", "2"])) == (1, 2)
        assert ms.get_auto_parallel_context("parallel_mode") == ms.ParallelMode.DATA_PARALLEL
    finally:
        ms.reset_auto_parallel_context()
