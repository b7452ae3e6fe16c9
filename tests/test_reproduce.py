from cemnet import reproduce as repro
from cemnet.reproduce import TABLES, reproduce


def test_table1_has_every_row_and_reruns_do_not_retrain(data_dir, tmp_path, monkeypatch):
    options = {"data_dir": str(data_dir), "limit_train": 200, "limit_test": 100, "batch_size": 50,
               "progress": False, "download": False}
    markdown = reproduce("table1", epochs=1, out=tmp_path, **options)
    lines = markdown.splitlines()
    assert len(lines) == 2 + len(TABLES["table1"])
    for row in TABLES["table1"]:
        assert any(line.startswith(f"| {row.label} | {row.paper_error} |") for line in lines)
    assert (tmp_path / "table1" / "table1.md").read_text() == markdown
    cemnet_line = next(line for line in lines if line.startswith("| CEMNet | 0.67%"))
    assert "| 1 | 368K / 481K | 365K / 461K |" in cemnet_line

    def no_training(*args, **kwargs):
        raise AssertionError("a finished row was retrained")

    import cemnet.train

    monkeypatch.setattr(cemnet.train, "train", no_training)
    assert reproduce("table1", epochs=1, out=tmp_path, **options) == markdown
    assert repro.TABLES["table1"][1].model is None  # baselines are reported, not trained
