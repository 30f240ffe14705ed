"""demo.py's summary and estimates come from the files the scripts write, not from their console lines."""
import argparse
import json
import os

import pytest

import demo

METRICS_HEADER = ("epoch,global_step,train_loss,lr,val_loss,skipped_steps,skipped_images,"
                  "summed_top1,summed_top5,conv_top1,conv_top5,transformer_top1,transformer_top5")


def _outputs(tmp_path):
    """Small fake outputs of train.py, eval.py, eval_onnx.py and infer.py; -> (facts, files)."""
    summary = tmp_path / "summary_dir"
    summary.mkdir()
    (summary / "metrics.csv").write_text(METRICS_HEADER + "\n1,10,2.1,0.001,1.9,0,0,0.5,0.9,0.4,0.9,0.45,0.9\n"
                                         "2,20,1.2,0.0005,1.1,0,0,0.7,0.95,0.6,0.9,0.65,0.9\n")
    (summary / "loss.csv").write_text("global_step,epoch,loss\n10,1,2.1\n20,2,1.2\n")
    best = tmp_path / "best_checkpoints"
    best.mkdir()
    (best / "best.json").write_text(json.dumps({"/ck/e1.ckpt": 0.5, "/ck/e2.ckpt": 0.7}))
    results = tmp_path / "results"
    results.mkdir()
    (results / "eval.json").write_text(json.dumps({
        "num_images": 360,
        "summed": {"top1": 0.8913, "top5": 0.99791, "loss": 0.38642},
        "conv": {"top1": 0.894444, "top5": 0.9978, "loss": 0.3651},
        "transformer": {"top1": 0.88119, "top5": 0.9977, "loss": 0.40781}}))
    (results / "eval_onnx.json").write_text(json.dumps({"num_images": 360, "summed": {"top1": 0.8912, "top5": 0.998}}))
    truth = {"/h/a.png": 0, "/h/b.png": 1, "/h/c.png": 2}
    predictions = tmp_path / "predictions"
    predictions.mkdir()
    (predictions / "predictions.json").write_text(json.dumps({"/h/a.png": 0, "/h/b.png": 1, "/h/c.png": 1}))
    (predictions / "predictions_mindir.json").write_text(json.dumps({"/h/a.png": 0, "/h/b.png": 2, "/h/c.png": 1}))
    facts = {"data_name": "scikit-learn digits", "data": "/d", "train_count": 1437, "n_test": 360,
             "arch": "conformer_reduced_patch16", "per_epoch": 1437, "val_images": 360, "truth": truth}
    files = {"summary_dir": str(summary), "best_json": str(best / "best.json"),
             "eval_json": str(results / "eval.json"), "onnx_json": str(results / "eval_onnx.json"),
             "pred_ckpt": str(predictions / "predictions.json"),
             "pred_mindir": str(predictions / "predictions_mindir.json"),
             "onnx_path": "/x/m.onnx", "mindir_path": "/x/m.mindir"}
    return facts, files


STAGE_TIMES = {"data": 2.4, "train": 61.6, "eval": 9.2, "export": 6.0, "onnx": 1.4, "infer": 8.0}


def test_summary_lines_come_from_the_files(tmp_path):
    facts, files = _outputs(tmp_path)
    lines = demo.summary_lines(facts, files, STAGE_TIMES, train_rate=421.96, total=90.4)
    assert lines == [
        "",
        "demo: summary",
        "  data        scikit-learn digits, 1437 train / 360 test images in /d (2 s)",
        "  train.py    conformer_reduced_patch16, 2 epoch(s) x 1437 images, 422.0 img/s "
        "(62 s with per-epoch validation on 360 images)",
        "  eval.py     summed heads      Top1-Acc 0.8913  Top5-Acc 0.9979  Loss 0.3864",
        "  eval.py     conv head         Top1-Acc 0.8944  Top5-Acc 0.9978  Loss 0.3651",
        "  eval.py     transformer head  Top1-Acc 0.8812  Top5-Acc 0.9977  Loss 0.4078",
        "  eval.py     360 images in 9 s",
        "  eval_onnx   Top1-Acc 0.8912  Top5-Acc 0.9980  (1 s, onnxruntime)",
        "  infer.py    2/3 held-out images right; the MINDIR agrees on 2/3",
        "  checkpoint  /ck/e2.ckpt",
        f"  JSON        {files['pred_ckpt']} (and predictions_mindir.json)",
        "  ONNX        /x/m.onnx",
        "  MINDIR      /x/m.mindir",
        "  curves      (no matplotlib: see metrics.csv)",
        f"  metrics     {os.path.join(files['summary_dir'], 'metrics.csv')}",
        "  time        data 2 s, train 62 s, eval 9 s, export 6 s, onnx 1 s, infer 8 s",
        "demo: Top1-Acc=0.8913 on 360 test images in 90 s",
    ]
    (tmp_path / "summary_dir" / "metrics.png").write_bytes(b"png")
    lines = demo.summary_lines(facts, files, STAGE_TIMES, train_rate=421.96, total=90.4)
    assert f"  curves      {tmp_path / 'summary_dir' / 'metrics.png'}" in lines


@pytest.mark.parametrize("name, content, fragment", [
    ("results/eval.json", None, "cannot read the results file"),
    ("results/eval.json", '{"num_images": 360, "summed": {"top1": 1, "top5": 1, "loss": 1}}', "no 'conv'"),
    ("results/eval_onnx.json", '{"num_images": 360, "summed": {"top5": 1}}', "no 'top1'"),
    ("results/eval_onnx.json", "{not json", "cannot read the results file"),
    ("best_checkpoints/best.json", "{}", "no best checkpoint listed"),
    ("summary_dir/metrics.csv", None, "cannot read train.py's metrics"),
])
def test_a_missing_or_wrong_file_is_one_error_naming_it(tmp_path, name, content, fragment):
    facts, files = _outputs(tmp_path)
    path = tmp_path / name
    if content is None:
        path.unlink()
    else:
        path.write_text(content)
    with pytest.raises(demo.DemoError) as e:
        demo.summary_lines(facts, files, STAGE_TIMES, train_rate=1.0, total=1.0)
    assert str(e.value).startswith(f"{path}: ") and fragment in str(e.value) and "\n" not in str(e.value)


def test_estimates_take_the_validation_time_from_metrics_csv(tmp_path):
    d = demo.Demo(argparse.Namespace(workdir=str(tmp_path), config=demo.DEFAULT_CONFIG))
    d.val_images = 1000
    t0 = 1_000_000.0
    d.on_train_line("epoch 1/2 step 2/10 loss 2.1 lr 1.000e-03 img/s - ETA -", t0 - 30)
    d.on_train_line("epoch 1/2 step 5/10 loss 2.0 lr 1.000e-03 img/s 280.0 ETA 0:00:20", t0 - 20)
    d.on_train_line("epoch 1/2 step 10/10 loss 1.9 lr 1.000e-03 img/s 300.0 ETA 0:00:10", t0)
    assert d.rates["train"] == 300.0 and d.rates["eval"] == demo.DEFAULT_RATES["eval"]
    # no console line of the validation is read: only when train.py wrote its metrics.csv row
    (tmp_path / "summary_dir").mkdir()
    csv_path = tmp_path / "summary_dir" / "metrics.csv"
    csv_path.write_text(METRICS_HEADER + "\n")
    os.utime(csv_path, (t0 + 4, t0 + 4))
    d.on_train_line("anything train.py prints", t0 + 9)
    assert d.rates["eval"] == 250.0  # 1000 images validated in the 4 s after the epoch's last step
    d.on_train_line("epoch 2/2 step 5/10 loss 1.5 lr 1.000e-03 img/s 310.0 ETA 0:00:05", t0 + 20)
    assert d.rates == {**demo.DEFAULT_RATES, "train": 310.0, "eval": 250.0}  # the same write is counted once
    assert d.mean_train_rate() == 890 / 3  # every line with a figure (the first, compiling one has none)


def test_the_resolved_configuration_is_folded_into_one_line_naming_its_file():
    fold = demo.ConfigFold("/w/summary_dir/config.yaml")
    out = [shown for line in ["arch x: 5 parameters", demo.CONFIG_HEADER, "  dataset: ImageNet",
                              "  batch_size: 64", "  epochs: 2", "epoch 1/2 step 1/9 loss 2.3"]
           for shown in fold.shown(line)]
    assert out == ["arch x: 5 parameters", "resolved configuration:",
                   "  (3 settings, as in /w/summary_dir/config.yaml)", "epoch 1/2 step 1/9 loss 2.3"]
