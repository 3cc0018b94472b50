from siger_hello import hooks

from sigerlm_testkit import add_plugin


def test_hello_step_writes_greetings(plugin_manager, run_manifest, tmp_path):
    add_plugin(plugin_manager, hooks, "hello")
    (tmp_path / "names.txt").write_text("Ani\n\nBudi\n")
    manifest = {
        "siger": 1,
        "name": "hello",
        "data": {"train": {"use": "lines", "path": str(tmp_path / "names.txt")}},
        "steps": [{"use": "hello", "who": "Lampung", "times": 2}],
    }
    result = run_manifest(manifest)
    text = (result.out_dir / "hello.txt").read_text()
    assert text == "Hello, Lampung!\nHello, Lampung!\nread: Ani\nread: Budi\n"
    assert result.results["steps"][0]["results"]["lines"] == 4
