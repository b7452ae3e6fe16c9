import json

import pytest

from cemnet.reproduce import TABLES, reproduce


@pytest.fixture
def quick(data_dir):
    return {"data_dir": str(data_dir), "limit_train": 200, "limit_test": 100, "batch_size": 50, "progress": False,
            "download": False}


def test_table1_has_every_row_and_finished_seeds_are_not_retrained(quick, tmp_path, monkeypatch):
    import cemnet.training

    markdown = reproduce("table1", epochs=1, out=tmp_path, seeds=2, **quick)
    lines = markdown.splitlines()
    assert len(lines) == 2 + len(TABLES["table1"])
    for row in TABLES["table1"]:
        assert any(line.startswith(f"| {row.label} | {row.paper_error} |") for line in lines)
    assert (tmp_path / "table1" / "table1.md").read_text() == markdown
    cemnet_line = next(line for line in lines if line.startswith("| CEMNet | 0.67%"))
    assert "± " in cemnet_line and "| 2 | 1 | 368K / 481K | 365K / 461K |" in cemnet_line
    fcnn_line = next(line for line in lines if line.startswith("| FCNN"))
    assert "| 2 | 1 |" in fcnn_line  # the reconstruction trains and reports
    assert "not run" in next(line for line in lines if line.startswith("| 2SReLU"))

    trained = []
    real_train = cemnet.training.train
    monkeypatch.setattr(cemnet.training, "train", lambda config, **kw: trained.append(config) or real_train(config, **kw))
    assert reproduce("table1", epochs=1, out=tmp_path, seeds=2, **quick) == markdown
    assert trained == []  # every seed was read back
    results = json.loads((tmp_path / "table1" / "table1.json").read_text())
    row = results["cemnet"]
    assert len(row["errors"]) == 2 and row["seeds"] == 2 and len(row["seconds"]) == 2
    assert row["error"] == pytest.approx(sum(row["errors"]) / 2)
    assert row["error_std"] == pytest.approx(abs(row["errors"][0] - row["errors"][1]) / 2**0.5)

    reproduce("table1", epochs=1, out=tmp_path, seeds=3, **quick)
    assert sorted({config.seed for config in trained}) == [2]  # only the new seed trains
    assert len(trained) == sum(row.model is not None for row in TABLES["table1"])



def test_an_interrupted_seed_resumes_instead_of_starting_again(quick, tmp_path, monkeypatch):
    import cemnet.training

    run = tmp_path / "table1" / "cemnet" / "seed-0"
    cemnet.training.train(cemnet.training.TrainConfig(model="cemnet-mnist", epochs=2, stop_after=1, out=str(run),
                                                      seed=0, **quick))
    calls = []
    real_train = cemnet.training.train
    monkeypatch.setattr(cemnet.training, "train", lambda config, **kw: calls.append(kw) or real_train(config, **kw))
    reproduce("table1", epochs=2, out=tmp_path, rows=["cemnet"], **quick)
    assert calls == [{"resume": True}]
    with (run / "metrics.csv").open() as handle:
        assert [line.split(",")[0] for line in handle.read().splitlines()[1:]] == ["1", "2"]
