"""scripts/run_distribute_train_gpu.sh: msrun data parallel on CPU (two "nodes" of one process each on this
machine, then one node of two processes: ranks in sync, gradients averaged, resume), the launcher choice
(msrun by default, mpirun when asked or when msrun is absent) and its command lines, and one device never
touching the communication library."""
import glob
import os
import re
import shlex
import signal
import socket
import subprocess
import threading
import time

import numpy as np
import pytest

from conftest import REPO, free_port, script_env
from datasets import write_digits_folder
from datasets import NO_AUGMENT, SMALL

pytestmark = pytest.mark.e2e  # runs the scripts as subprocesses (or trains)

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


def _uniform_colour_folder(root):
    """Images of one colour each: any crop or flip leaves them unchanged, so the random train
    transform is deterministic and two processes can be compared exactly."""
    from PIL import Image
    rng = np.random.default_rng(0)
    for split, count in (("train", 8), ("val", 2)):
        for label in range(10):
            os.makedirs(root / split / str(label), exist_ok=True)
            for i in range(count):
                colour = tuple(int(c) for c in rng.integers(0, 256, 3))
                Image.new("RGB", (32, 32), colour).save(root / split / str(label) / f"{i}.png")
    return str(root)


def test_two_nodes_train_in_sync_average_gradients_and_one_node_of_two_processes_resumes(tmp_path):
    """Two "nodes" of one process each, 8 images per rank: both end with identical weights equal to one
    process applying the mean of the two half-batches' gradients (BatchNorm statistics are per rank, as in
    DDP). msrun starts the scheduler on the node that owns --master_addr, so node 1 is given 127.0.0.2, an
    address this machine does not own, relayed to node 0's scheduler on 127.0.0.1 as a network would (with
    127.0.0.1 on both, both would start a scheduler on the same port). Then one node of two processes
    continues with one more epoch: rank 0 picks the checkpoint, rank 1 takes its choice."""
    import mindspore as ms
    from src.config import parse_args
    from src.conformer import create_model_from_config
    from src.data.imagenet import create_dataset
    from src.trainer.loss import create_loss
    from src.trainer.train_one_step import NetWithLoss
    data = _uniform_colour_folder(tmp_path / "colours")
    args = [*SMALL, "--data_url", data, "--train_num_samples", "16", "--val_num_samples", "10", "--epochs", "1",
            *NO_AUGMENT, "--optimizer", "momentum", "--base_lr", "0.05", "--weight_decay", "0",
            "--lr_scheduler", "constant_lr", "--with_ema", "false", "--batch_size", "8", "--print_loss_every", "1"]
    outputs = ["--ckpt_root_dir", str(tmp_path / "ckpt"), "--best_ckpt_root_dir", str(tmp_path / "best"),
               "--summary_root_dir", str(tmp_path / "summary")]
    port = free_port()
    _relay(("127.0.0.2", port), ("127.0.0.1", port))
    nodes = []
    try:
        for rank in (0, 1):  # each "node" in its own folder with its own logs, as on two machines
            node = tmp_path / f"node{rank}"
            node.mkdir()
            env = dict(os.environ, GLOG_v="3", LOG_DIR=str(node / "logs"))
            nodes.append(subprocess.Popen(
                ["bash", SCRIPT, CONFIG, "--num_devices", "1", "--num_nodes", "2", "--node_rank", str(rank),
                 "--master_addr", f"127.0.0.{rank + 1}", "--master_port", str(port), "--checkpoint", "auto",
                 "--extra", *args[2:], *outputs],
                cwd=node, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                start_new_session=True))
        outputs_of = [p.communicate(timeout=300)[0] for p in nodes]
    finally:
        for proc in nodes:
            _stop(proc)
    assert not (tmp_path / "node1" / "logs" / "scheduler.log").exists(), "node 1 is not the master"
    logs = [(tmp_path / f"node{rank}" / "logs" / f"worker_{rank}.log").read_text() for rank in (0, 1)]
    for rank, (proc, output, log) in enumerate(zip(nodes, outputs_of, logs)):
        assert proc.returncode == 0, output[-3000:] + log[-3000:]
        # each rank trained: its weights moved from the (shared, seeded) start
        assert _fingerprint(log, "initial weights") != _fingerprint(log, f"rank {rank}/2: weights")
    assert re.search(r"^epoch 1/1 step 1/1 loss", logs[0], re.M)  # 16 images over 2 ranks x 8: one step
    assert "rank 1/2: --checkpoint auto: rank 0 chose a fresh start" in logs[1]
    for kind in ("initial weights", ": weights"):  # same start (seeding) and same end (all-reduce)
        assert _fingerprint(logs[0], kind) == _fingerprint(logs[1], kind), kind

    # the same step in one process: seed as train.py does, one gradient per rank's batch, mean, SGD
    cfg = parse_args(args)
    ms.set_seed(cfg.seed)
    np.random.seed(cfg.seed)
    net = create_model_from_config(cfg)
    loss_net = NetWithLoss(net, create_loss(cfg))
    loss_net.set_train(True)
    grad_fn = ms.value_and_grad(loss_net, None, net.trainable_params())
    grads = []
    for rank in (0, 1):
        images, targets = next(create_dataset(cfg, "train", rank_id=rank, rank_size=2).create_tuple_iterator())
        grads.append([g.asnumpy() for g in grad_fn(images, targets)[1]])
    (first,) = glob.glob(str(tmp_path / "ckpt" / "*.ckpt"))  # rank 0 wrote the checkpoint
    trained = ms.load_checkpoint(first)
    for p, g0, g1 in zip(net.trainable_params(), *grads):
        expected = p.asnumpy() - 0.05 * (g0 + g1) / 2
        np.testing.assert_allclose(trained[p.name].asnumpy(), expected, rtol=1e-4, atol=1e-6, err_msg=p.name)

    # one node of two processes, one more epoch: rank 0 picks the checkpoint, rank 1 takes its choice
    env = dict(os.environ, GLOG_v="3", LOG_DIR=str(tmp_path / "logs"), MASTER_PORT=str(free_port()))
    args[args.index("--epochs") + 1] = "2"
    launch = ["bash", SCRIPT, CONFIG, "--num_devices", "2", "--device_ids", "0,1", "--checkpoint", "auto", "--extra",
              *args[2:], *outputs]
    result = subprocess.run(launch, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    logs = {name: (tmp_path / "logs" / name).read_text() for name in ("worker_0.log", "worker_1.log")}
    assert f"resumed from {first}: epoch 2, step 1" in logs["worker_0.log"]
    assert f"rank 1/2: --checkpoint auto: rank 0 chose {first}" in logs["worker_1.log"]
    fingerprints = {re.search(r": weights fingerprint (\w+)", log).group(1) for log in logs.values()}
    assert len(fingerprints) == 1


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
    from src.runtime.device import DeviceError, init_distributed

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


def _children(pid: int) -> list:
    result = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(p) for p in result.stdout.split()]


def _environ(pid: int) -> dict:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return dict(item.split("=", 1) for item in f.read().decode(errors="replace").split("\0") if "=" in item)
    except OSError:
        return {}


def _is_train_py(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"train.py" in f.read()
    except OSError:
        return False


def _wait_for(path, text, proc, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(path) and text in open(path, errors="replace").read():
            return
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    raise AssertionError(f"{text!r} not in {path}: " + (open(path).read()[-3000:] if os.path.exists(path) else "-"))


@pytest.mark.parametrize("target", ["rank 1 only", "the launch script"])
def test_sigterm_under_msrun_stops_every_rank_after_the_same_step(tmp_path, target):
    """SIGTERM to one worker: the all-reduced stop flag stops both ranks after the same step (else rank 0
    would block in the next gradient all-reduce and never write). SIGTERM to the script: it forwards it to
    its workers (msrun itself would SIGKILL them on SIGINT, or die of SIGTERM and leave them running)."""
    from src.checkpoint import read_checkpoint
    data = write_digits_folder(tmp_path / "digits", train_per_class=30, val_per_class=1)
    log_dir = tmp_path / "logs"
    # both cases launch the same job in other folders: their ranks share one compile cache (rank_N in it)
    env = dict(script_env([SCRIPT], compile_cache="msrun-sigterm"), LOG_DIR=str(log_dir), MASTER_PORT=str(free_port()))
    extra = [*SMALL[2:], "--data_url", data, "--epochs", "1", "--batch_size", "5", *NO_AUGMENT, "--with_ema", "false",
             "--print_loss_every", "1", "--ckpt_root_dir", str(tmp_path / "ckpt"),
             "--best_ckpt_root_dir", str(tmp_path / "best"), "--summary_root_dir", str(tmp_path / "summary")]
    proc = subprocess.Popen(["bash", SCRIPT, CONFIG, "--num_devices", "2", "--extra", *extra], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _wait_for(log_dir / "worker_0.log", "epoch 1/1 step 3/30", proc)
        if target == "rank 1 only":
            workers = [p for launcher in _children(proc.pid) for p in _children(launcher)  # not msrun's `tail`s
                       if _environ(p).get("MS_ROLE") == "MS_WORKER" and _is_train_py(p)]
            rank1 = [p for p in workers if _environ(p).get("RANK_ID") == "1"]
            assert len(workers) == 2 and len(rank1) == 1, workers
            os.kill(rank1[0], signal.SIGTERM)
        else:
            os.kill(proc.pid, signal.SIGTERM)
        err = proc.communicate(timeout=120)[1]
    finally:
        _stop(proc)
    assert proc.returncode == 143, err[-3000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1, err[-3000:]
    stop = re.fullmatch(r"run_distribute_train_gpu\.sh: stopped by SIGTERM after epoch 1 step (\d+)/30 \(global step "
                        r"\1\); checkpoint (\S+); resume with: bash \S+run_distribute_train_gpu\.sh \S+ --num_devices 2 "
                        r"--checkpoint \2 --extra .*", lines[0])
    assert stop, lines[0]
    step = stop.group(1)
    rank1_log = (log_dir / "worker_1.log").read_text()
    assert f"rank 1/2: stopped by SIGTERM after epoch 1 step {step}/30" in rank1_log  # the same step
    state = read_checkpoint(stop.group(2))  # rank 0 wrote it, complete
    assert int(state["global_step"].asnumpy()[0]) == int(step) and int(state["step_in_epoch"].asnumpy()) == int(step)
    assert os.listdir(tmp_path / "ckpt") == [os.path.basename(stop.group(2))]
    assert "timed out" not in (log_dir / "scheduler.log").read_text()  # ended with the workers


def test_a_device_this_mindspore_lacks_fails_in_one_line_before_any_worker_starts(tmp_path):
    import mindspore as ms
    env = dict(os.environ, LOG_DIR=str(tmp_path / "logs"))
    expected = (f"device_target GPU: this MindSpore ({ms.__version__}) has no usable GPU support here (it runs on: "
                "CPU); install its GPU build (see the README's Install) or pass --extra --device_target CPU")
    for script, options in (("run_distribute_train_gpu.sh", ["--num_devices", "2"]),
                            ("run_standalone_train_gpu.sh", ["--device", "0"])):
        result = subprocess.run(["bash", os.path.join(REPO, "scripts", script), CONFIG, *options], cwd=tmp_path,
                                env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 2 and result.stderr.splitlines() == [f"{script}: error: {expected}"], result.stderr
        assert result.stdout == "" and not (tmp_path / "logs").exists()  # msrun never started


def test_a_failing_worker_ends_the_job_with_one_line_naming_its_log(tmp_path):
    log_dir = tmp_path / "logs"
    env = dict(os.environ, GLOG_v="3", LOG_DIR=str(log_dir), MASTER_PORT=str(free_port()))
    result = subprocess.run(["bash", SCRIPT, CONFIG, "--num_devices", "2", "--extra", *SMALL[2:],
                             "--data_url", str(tmp_path / "nowhere")],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert result.stderr.splitlines() == [
        f"run_distribute_train_gpu.sh: error: training failed (exit {result.returncode}); {log_dir}/worker_0.log "
        f"ends: train.py: error: data folder not found: {tmp_path}/nowhere/val"], result.stderr[-3000:]
    assert "Traceback" in (log_dir / "msrun.log").read_text()  # msrun's own report, kept out of the console
    # msrun's scheduler was ended at the failure, not after waiting out the dead worker's heartbeat timeout
    assert "timed out" not in (log_dir / "scheduler.log").read_text()
