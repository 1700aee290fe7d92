"""Downstream use of a checkpoint: classification fine-tuning (AUROC, label policies, the probe's fit, `qft finetune`)
and answering held-out QA pairs (`qft answer`)."""
import csv
import itertools
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors import safe_open

from model.cli import main
from model.config import load_config
from model.data.tables import Study
from model.evaluate import auroc
from model.finetune.classify import fit_logistic, label_targets, paired_difference, score_split
from model.synthetic import make_corpus
from model.train import pretrain
from model_shapes import micro

SMALL = micro(128, **{"model.queue_size": 0, "model.momentum": 0.0, "data.vocab_size": 300, "data.workers": 0,
                      "train.batch_size": 8, "train.steps": 2, "train.warmup_steps": 1, "train.eval_every": 0,
                      "train.save_every": 0, "train.eval_studies": 8})


def test_auroc_is_the_pairwise_win_rate_with_half_credit_for_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, 60).astype(float)  # many ties
    labels = rng.integers(-1, 2, 60).astype(float)  # -1 entries are not scored
    pos, neg = scores[labels == 1], scores[labels == 0]
    wins = sum((p > n) + 0.5 * (p == n) for p, n in itertools.product(pos, neg))
    assert auroc(scores, labels) == pytest.approx(wins / (len(pos) * len(neg)))
    assert auroc(np.array([0.1, 0.9, 0.5]), np.array([0.0, 1.0, -1.0])) == 1.0
    assert np.isnan(auroc(np.array([0.1, 0.9]), np.array([1.0, 1.0])))  # one class only


def test_score_split_frequent_macro_leaves_out_rare_labels_and_brackets_it_with_a_bootstrap_interval():
    rng = np.random.default_rng(1)
    n = 60
    y = np.zeros((n, 3))
    y[:20, 0] = 1  # frequent, well predicted
    y[:6, 1] = 1  # frequent (6 positives), predicted at chance
    y[0, 2] = 1  # one positive: its AUROC is a single rank
    y[5, 2] = -1  # uncertain: not scored
    p = np.stack([y[:, 0] * 0.5 + rng.random(n) * 0.6, rng.random(n), 1 - y[:, 2] - 0.1 * rng.random(n)], 1)
    m = score_split(p, y, ["a", "b", "rare"], boot=200)
    assert m["positives"] == {"a": 20, "b": 6, "rare": 1} and m["labels_scored"] == 3
    assert m["auroc"]["rare"] == 0.0 and m["frequent_labels"] == ["a", "b"]
    assert m["macro_auroc"] == pytest.approx(np.mean([auroc(p[:, j], y[:, j]) for j in range(3)]), abs=1e-4)
    frequent = np.mean([auroc(p[:, j], y[:, j]) for j in range(2)])
    assert m["macro_auroc_frequent"] == pytest.approx(frequent, abs=1e-4) and m["macro_auroc"] < frequent
    lo, hi = m["macro_auroc_frequent_ci95"]
    assert lo < frequent < hi and hi - lo < 0.4
    assert score_split(p, y, ["a", "b", "rare"], boot=200) == m  # seeded: the same interval again
    none = score_split(p, y, ["a", "b", "rare"], min_positives=30)
    assert none["frequent_labels"] == [] and none["macro_auroc_frequent"] is None
    assert score_split(p, y, ["a", "b", "rare"], boot=0)["macro_auroc_frequent_ci95"] is None


def test_paired_difference_is_zero_against_itself_and_bounded_away_from_zero_for_a_better_model():
    rng = np.random.default_rng(2)
    y = (rng.random((80, 2)) < 0.3).astype(float)
    good = y * 0.6 + rng.random((80, 2))  # informative
    noise = rng.random((80, 2))  # chance
    assert paired_difference(good, good, y, boot=100) == {"diff": 0.0, "ci95": [0.0, 0.0]}
    d = paired_difference(good, noise, y, boot=300)
    expect = np.mean([auroc(good[:, j], y[:, j]) - auroc(noise[:, j], y[:, j]) for j in range(2)])
    assert d["diff"] == pytest.approx(expect, abs=1e-4) and 0 < d["ci95"][0] < d["diff"] < d["ci95"][1]
    flipped = paired_difference(noise, good, y, boot=300)
    assert flipped["diff"] == -d["diff"] and flipped["ci95"][1] < 0


def test_label_targets_blank_is_negative_and_uncertain_follows_the_policy(tmp_path):
    pq.write_table(pa.Table.from_pylist([
        {"report_id": "r1", "scheme": "chexpert", "label": "Edema", "value": 1},
        {"report_id": "r1", "scheme": "chexpert", "label": "Atelectasis", "value": -1},
        {"report_id": "r2", "scheme": "chexpert", "label": "Atelectasis", "value": 0},
        {"report_id": "r2", "scheme": "chestxray14", "label": "Mass", "value": 1}]), tmp_path / "labels.parquet")
    studies = [Study(r, r, None, "text", "train") for r in ("r1", "r2", "r3")]  # r3: no label rows at all
    names, y = label_targets(studies, tmp_path)
    assert names == ["Atelectasis", "Edema"]
    assert y.tolist() == [[-1, 1], [0, 0], [-1, -1]]  # r2 never mentions Edema: negative; r3 unlabelled
    assert label_targets(studies, tmp_path, uncertain="ones")[1][0].tolist() == [1, 1]
    assert label_targets(studies, tmp_path, uncertain="zeros")[1][0].tolist() == [0, 1]
    assert label_targets(studies, tmp_path, scheme="chestxray14")[1].tolist() == [[-1], [1], [-1]]
    with pytest.raises(ValueError, match="no rows with scheme 'other'"):
        label_targets(studies, tmp_path, scheme="other")
    with pytest.raises(FileNotFoundError, match="labels.parquet"):
        label_targets(studies, tmp_path / "missing")


def test_fit_logistic_separates_and_ignores_unscored_targets():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(80, 5, generator=g)
    y = torch.stack([(x[:, 0] > 0).float(), (x[:, 1] + x[:, 2] > 0).float()], 1)
    w, b = fit_logistic(x, y, l2=1e-3)
    p = torch.sigmoid(x @ w + b)
    assert auroc(p[:, 0].numpy(), y[:, 0].numpy()) == 1.0 and auroc(p[:, 1].numpy(), y[:, 1].numpy()) == 1.0
    assert w[0, 0] > 1 and abs(w[3:, 0]).max() < 0.5 * w[0, 0]  # the informative feature carries the weight
    # rows whose target is -1 do not move that label's fit (the other label still uses them)
    noisy = torch.cat([y, 1 - y[:10]])
    noisy[80:, 0] = -1
    w2, b2 = fit_logistic(torch.cat([x, x[:10]]), noisy, l2=1e-3)
    assert torch.allclose(w2[:, 0], w[:, 0], atol=1e-3) and not torch.allclose(w2[:, 1], w[:, 1], atol=1e-3)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("classify")
    make_corpus(root / "data", root / "images", n_studies=80, size=40, seed=4)
    pretrain(load_config("tiny", SMALL), root / "data", root / "images", root / "run", progress=False)
    return root


def test_finetune_probe_writes_metrics_predictions_and_head(run, capsys):
    out = run / "probe"
    assert main(["finetune", "--checkpoint", str(run / "run" / "checkpoint"), "--data", str(run / "data"),
                 "--images", str(run / "images"), "--out", str(out), "--cache", str(run / "run" / "cache"),
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "Cardiomegaly" in printed and "macro AUROC" in printed and "bootstrap 95 % CI" in printed
    m = json.loads((out / "metrics.json").read_text())
    assert m["labels"] == ["Cardiomegaly", "Lung Lesion", "No Finding", "Pleural Effusion"]
    assert m["mode"] == "probe" and m["init"] == "pretrained"
    held = m["held_out"]
    assert held["n"] == m["validate"]["n"] + m["test"]["n"] == 24  # 30 % of 80 studies, by patient
    # the synthetic heart is drawn 70 % larger when enlarged: even a 2-step model's features show it
    assert held["auroc"]["Cardiomegaly"] >= 0.9
    with open(out / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 24 and {r["split"] for r in rows} == {"validate", "test"}
    assert all(0 <= float(r["Cardiomegaly"]) <= 1 for r in rows)
    with safe_open(str(out / "head.safetensors"), "pt") as f:
        assert json.loads(f.metadata()["labels"]) == m["labels"]
        assert f.get_tensor("weight").shape[0] == 4 and f.get_tensor("feature_std").min() > 0
    # deterministic: the same command gives the same numbers
    main(["finetune", "--checkpoint", str(run / "run" / "checkpoint"), "--data", str(run / "data"),
          "--images", str(run / "images"), "--out", str(run / "probe2"), "--cache", str(run / "run" / "cache"),
          "--no-progress"])
    assert json.loads((run / "probe2" / "metrics.json").read_text()) == m


def test_finetune_full_and_random_init(run):
    from model.finetune.classify import finetune_classifier

    ck = run / "run" / "checkpoint"
    m = finetune_classifier(ck, run / "data", run / "images", run / "full", mode="full", epochs=2, batch_size=8,
                            cache=run / "run" / "cache", progress=False)
    assert m["mode"] == "full" and m["test"]["macro_auroc"] is not None
    with safe_open(str(run / "full" / "head.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert "classifier.2.weight" in keys and any(k.startswith("qft.image_encoder.") for k in keys)
    assert not any(k.startswith(("qft.decoder.", "qft.text_encoder.")) for k in keys)
    r = finetune_classifier(ck, run / "data", run / "images", run / "rand", random_init=True,
                            cache=run / "run" / "cache", progress=False)
    p = finetune_classifier(ck, run / "data", run / "images", run / "pre", cache=run / "run" / "cache", progress=False,
                            baseline=run / "rand")
    assert r["init"] == "random" and p["init"] == "pretrained" and p["baseline"] == str(run / "rand")
    for split in ("held_out", "validate", "test"):  # paired on the same studies: the difference of the two macros
        if p[split]["macro_auroc_frequent"] is not None:
            assert p[split]["frequent_labels"] == r[split]["frequent_labels"]
            assert p[split]["vs_baseline"]["diff"] == pytest.approx(
                p[split]["macro_auroc_frequent"] - r[split]["macro_auroc_frequent"], abs=2e-4)
    # other weights, other features, other probabilities
    assert (run / "rand" / "predictions.csv").read_text() != (run / "pre" / "predictions.csv").read_text()


def test_finetune_errors_are_one_line(run, tmp_path, capsys):
    args = ["finetune", "--data", str(run / "data"), "--images", str(run / "images"), "--out", str(tmp_path / "o")]
    assert main([*args, "--checkpoint", str(tmp_path)]) == 2
    assert "not a checkpoint folder" in capsys.readouterr().err
    assert main([*args, "--checkpoint", str(run / "run" / "checkpoint"), "--scheme", "chestxray14",
                 "--cache", str(run / "run" / "cache")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no rows with scheme 'chestxray14'" in err and "\n" not in err
    other = tmp_path / "other_run"  # a baseline run on other studies cannot be compared pairwise
    other.mkdir()
    (other / "predictions.csv").write_text("report_id,split,Cardiomegaly,Lung Lesion,No Finding,Pleural Effusion\n"
                                           "x1,test,0.1,0.2,0.3,0.4\n")
    assert main([*args, "--checkpoint", str(run / "run" / "checkpoint"), "--cache", str(run / "run" / "cache"),
                 "--baseline", str(other), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "held-out studies are not in it" in err and "predictions.csv" in err and "\n" not in err


def test_answer_scores_normalise_and_count_overlap():
    from model.finetune.answer import normalise, score_answers, token_f1

    assert normalise("  No  pleural effusion, or pneumothorax. ") == "no pleural effusion or pneumothorax"
    assert token_f1("small left effusion", "Left pleural effusion.") == pytest.approx(2 / 3)
    assert token_f1("", "") == 1.0 and token_f1("yes", "no") == 0.0
    rows = [{"granularity": "fine", "reference": "yes", "answer": "Yes, small.", "exact": False, "f1": 0.5},
            {"granularity": "fine", "reference": "no", "answer": "no", "exact": True, "f1": 1.0},
            {"granularity": "fine", "reference": "left base", "answer": "", "exact": False, "f1": 0.0},
            {"granularity": "coarse", "reference": "The heart is normal.", "answer": "the heart is normal",
             "exact": True, "f1": 1.0}]
    m = score_answers(rows)
    assert m["fine"] == {"n": 3, "exact": 0.3333, "token_f1": 0.5, "yes_no_n": 2, "yes_no_accuracy": 1.0}
    assert m["coarse"] == {"n": 1, "exact": 1.0, "token_f1": 1.0} and "middle" not in m
    for r, t in zip(rows, ("presence", "presence", "location", "report")):
        r["question_type"] = t
    by_type = score_answers(rows, "question_type")
    assert list(by_type) == ["location", "presence", "report"] and by_type["presence"]["yes_no_accuracy"] == 1.0


def test_qft_answer_writes_one_row_per_held_out_pair(run, capsys):
    import pyarrow.parquet as pq

    out = run / "answers"
    assert main(["answer", "--checkpoint", str(run / "run" / "checkpoint"), "--data", str(run / "data"),
                 "--images", str(run / "images"), "--out", str(out), "--cache", str(run / "run" / "cache"),
                 "--granularity", "fine", "--granularity", "coarse", "--no-progress"]) == 0
    assert "yes/no acc" in capsys.readouterr().out
    qa = pq.read_table(run / "data" / "qa.parquet").to_pylist()
    held = [r for r in qa if r["split"] in ("validate", "test") and r["granularity"] in ("fine", "coarse")]
    with open(out / "answers.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(held) and {r["granularity"] for r in rows} == {"fine", "coarse"}
    assert sorted((r["report_id"], r["question"], r["reference"]) for r in rows) == \
        sorted((r["report_id"], r["question"], r["answer"]) for r in held)
    m = json.loads((out / "metrics.json").read_text())
    assert m["studies"] == 24 and m["fine"]["n"] == sum(r["granularity"] == "fine" for r in rows)
    assert m["fine"]["yes_no_n"] == sum(r["reference"] in ("yes", "no") for r in rows) > 0
    # question types joined from qa.parquet: the synthetic fine pairs are presence questions, coarse ones reports
    assert {r["question_type"] for r in rows} == {"presence", "report"}
    assert m["by_question_type"]["presence"]["n"] == m["fine"]["n"]
    # --max-studies limits the studies, bad input is one line
    assert main(["answer", "--checkpoint", str(run / "run" / "checkpoint"), "--data", str(run / "data"),
                 "--images", str(run / "images"), "--out", str(run / "answers2"), "--cache", str(run / "run" / "cache"),
                 "--max-studies", "2", "--no-progress"]) == 0
    capsys.readouterr()
    assert json.loads((run / "answers2" / "metrics.json").read_text())["studies"] == 2
    assert main(["answer", "--checkpoint", str(run), "--data", str(run / "data"), "--images", str(run / "images"),
                 "--out", str(run / "answers3")]) == 2
    assert "not a checkpoint folder" in capsys.readouterr().err


def test_without_split_columns_downstream_holds_out_the_pretraining_patients(tmp_path):
    from model.data.tables import holdout, load_studies
    from model.finetune.classify import finetune_classifier

    make_corpus(tmp_path / "data", tmp_path / "images", n_studies=60, size=40, seed=6, splits=(1.1, 0.0))
    cfg = load_config("tiny", {**SMALL, "train.seed": 11})
    pretrain(cfg, tmp_path / "data", tmp_path / "images", tmp_path / "run", progress=False)
    studies = load_studies(tmp_path / "data")
    assert {s.split for s in studies} == {"train"}
    held = {studies[i].report_id for i in holdout(studies, 11)[1]}
    assert held != {studies[i].report_id for i in holdout(studies, 5)[1]}
    finetune_classifier(tmp_path / "run" / "checkpoint", tmp_path / "data", tmp_path / "images", tmp_path / "ft",
                        cache=tmp_path / "run" / "cache", seed=5, progress=False)
    with open(tmp_path / "ft" / "predictions.csv") as f:
        assert {r["report_id"] for r in csv.DictReader(f)} == held
