"""The `bundle` command, run as users run it: the installed console script in a subprocess.

Commands that read manifests only (inspect, list, tag, archive, diff, verify --no-load) are
checked never to import TensorFlow; the ones that load a model (predict, verify) cost a
TensorFlow start-up each and are marked slow.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_tabular_frame, run_python

import bundle
from bundle import Bundle
from bundle.format.digest import digest_of

BUNDLE = shutil.which("bundle", path=os.path.dirname(sys.executable))
COMMANDS = [
    "inspect",
    "verify",
    "list",
    "predict",
    "archive",
    "tag",
    "diff",
    "serve",
    "export",
    "drift",
    "sign",
    "push",
    "pull",
    "gc",
    "pack",
]
COLUMNS = ["age", "income", "score", "visits", "plan", "region"]

pytestmark = pytest.mark.skipif(BUNDLE is None, reason="the `bundle` script is not installed")


def _env() -> dict[str, str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("PYTHONPATH", None)
    return env


def run(*args: object, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``bundle *args`` and return the finished process (stdout, stderr, returncode)."""
    return subprocess.run(
        [BUNDLE, *map(str, args)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=timeout,
    )


def run_many(commands: list[list[str]], timeout: int = 300) -> list[subprocess.CompletedProcess]:
    """Run several ``bundle`` invocations concurrently (each is a Python start-up)."""
    started = [
        (
            command,
            subprocess.Popen(
                [BUNDLE, *command],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=_env(),
            ),
        )
        for command in commands
    ]
    finished = []
    for command, process in started:
        out, err = process.communicate(timeout=timeout)
        finished.append(subprocess.CompletedProcess(command, process.returncode, out, err))
    return finished


def card_section(version_dir: Path, title: str) -> str:
    """The body of one ``## title`` section of a bundle's README.md model card."""
    text = (version_dir / "README.md").read_text(encoding="utf-8")
    body = text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    return body.strip().removeprefix("```").removesuffix("```").strip("\n")


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def release_root(tmp_path_factory, tabular_bundle, tabular_data, tabular_parts):
    """A root with the fixture's 1.0.0 and a 2.0.0 that differs in metadata and columns.

    2.0.0 has a pickled step (a FunctionTransformer of a lambda: needs trusted=True), a new
    column ``tenure``, ``visits`` as float64 instead of int64, and other metadata.
    """
    from sklearn.preprocessing import FunctionTransformer

    version_dir, _ = tabular_bundle
    frame, _ = tabular_data
    preprocess, labels, model = tabular_parts
    root = tmp_path_factory.mktemp("cli") / "churn"
    shutil.copytree(version_dir, root / "1.0.0")
    identity = FunctionTransformer(lambda x: x).fit(preprocess.transform(frame.iloc[:5]))
    example = frame.iloc[:100].assign(visits=frame["visits"].iloc[:100].astype("float64"))
    example["tenure"] = np.arange(100, dtype="float64")
    Bundle(
        model,
        preprocess=[preprocess, identity],
        postprocess=labels,
        input_example=example,
        name="churn",
        version="2.0.0",
        metadata={"auc": 0.93, "data": "v2"},
    ).save(root)
    return root


@pytest.fixture
def root_copy(release_root, tmp_path):
    """A modifiable copy of `release_root`."""
    target = tmp_path / "churn"
    shutil.copytree(release_root, target)
    return target


# ---------------------------------------------------------------------------- help, version
def test_help_on_every_subcommand_and_version():
    results = run_many(
        [["--help"], ["-h"], ["--version"], *([command, "--help"] for command in COMMANDS)]
    )
    for result in results:
        assert result.returncode == 0, (result.args, result.stderr)
        assert "Traceback" not in result.stderr
    top, short, version, *subcommands = results
    assert top.stdout == short.stdout
    assert top.stdout.startswith("Usage: bundle [OPTIONS] COMMAND")
    listed = top.stdout.split("Commands:", 1)[1]
    assert [line.split()[0] for line in listed.strip().splitlines()] == sorted(COMMANDS)
    assert version.stdout.strip() == f"keras-bundle {bundle.__version__}"
    for command, result in zip(COMMANDS, subcommands, strict=True):
        assert result.stdout.startswith(f"Usage: bundle {command} [OPTIONS]"), result.stdout
    serve_help = subcommands[COMMANDS.index("serve")].stdout
    options = ["--host", "--port", "--workers", "--trusted", "--max-batch-size", "--grpc-port"]
    for option in [*options, "--no-grpc", "--header-timeout", "--max-connections"]:
        assert option in serve_help


# ---------------------------------------------------------------------------- errors
def test_usage_errors_exit_2_and_name_the_problem(tabular_bundle):
    version_dir, _ = tabular_bundle
    results = run_many(
        [
            ["inspect"],
            ["list", str(version_dir.parent), "--bogus"],
            ["predict", str(version_dir), "in.csv"],
            ["frobnicate"],
            ["predict", str(version_dir), "rows.txt", "-o", "out.csv"],
            ["archive", str(version_dir), "release.tar"],
        ]
    )
    expected = [
        "Missing argument 'PATH'",
        "No such option '--bogus'",
        "Missing option '-o' / '--output'",
        "No such command 'frobnicate'",
        "pass --input-format parquet, csv or jsonl",
        "does not end with .tar.gz, .tgz or .zip",
    ]
    for result, message in zip(results, expected, strict=True):
        assert result.returncode == 2, (result.args, result.stderr)
        assert message in result.stderr
        assert "Traceback" not in result.stderr
        assert result.stdout == ""


def test_nonexistent_path_is_an_error_without_traceback(tmp_path):
    missing = tmp_path / "no-such-bundle"
    results = run_many(
        [
            ["inspect", str(missing)],
            ["verify", str(missing)],
            ["list", str(missing)],
            ["diff", str(missing), str(missing)],
            ["archive", str(missing), str(tmp_path / "x.tar.gz")],
            ["serve", str(missing), "--port", "0"],
        ]
    )
    for result in results:
        assert result.returncode == 1, (result.args, result.stdout, result.stderr)
        assert result.stderr.startswith("Error: "), result.stderr
        assert str(missing) in result.stderr
        assert "Traceback" not in result.stderr
        assert result.stdout == ""
    assert not (tmp_path / "x.tar.gz").exists()


def test_debug_shows_the_traceback(tmp_path):
    result = run("--debug", "inspect", tmp_path / "no-such-bundle")
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert "bundle.errors.BundleNotFoundError" in result.stderr


# ---------------------------------------------------------------------------- inspect
def test_inspect_text_shows_the_bundle(tabular_bundle):
    version_dir, _ = tabular_bundle
    result = run("inspect", version_dir)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.splitlines()[0] == "churn 1.0.0"
    manifest = bundle.Manifest.from_dict(json.loads((version_dir / "manifest.json").read_text()))
    assert f"created   {manifest.created}" in out
    assert f"location  {version_dir}" in out
    assert '"auc": 0.91' in out
    # The input table is the model card's, line for line (the same InputSchema rendering).
    card_input = card_section(version_dir, "Input")
    assert card_input.startswith("Tabular input: 6 columns")
    for line in card_input.splitlines():
        assert f"  {line}\n" in out
    for column in COLUMNS:
        assert any(line.split()[:1] == [column] for line in out.splitlines())
    steps = {line.split()[0]: line for line in out.splitlines() if "steps/" in line}
    assert "sklearn.compose.ColumnTransformer" in steps["preprocess[0]"]
    assert "native" in steps["preprocess[0]"]
    assert "sklearn.preprocessing.LabelEncoder" in steps["postprocess[0]"]
    assert not any("needs trusted=True" in line for line in steps.values())
    assert "trusted=True not needed" in out
    assert "float32 (None, 3)" in out  # the model's output signature
    environment = out.split("Environment", 1)[1].splitlines()
    numpy_row = next(line.split() for line in environment if line.split()[:1] == ["numpy"])
    assert numpy_row[1] == manifest.environment["numpy"] == numpy_row[2]
    assert "*" not in numpy_row


def test_inspect_json_holds_the_facts(tabular_bundle):
    version_dir, _ = tabular_bundle
    result = run("inspect", version_dir, "--json")
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    manifest = json.loads((version_dir / "manifest.json").read_text())
    assert (facts["name"], facts["version"]) == ("churn", "1.0.0")
    assert facts["created"] == manifest["created"]
    assert facts["location"] == str(version_dir)
    assert [c["name"] for c in facts["input_schema"]["columns"]] == COLUMNS
    assert facts["input_schema"]["columns"][4]["categories"] == ["basic", "plus", "pro"]
    assert facts["metadata"] == {"auc": 0.91}
    assert facts["needs_trusted"] is False and facts["trusted_parts"] == []
    assert facts["size"] == sum(entry["size"] for entry in manifest["files"].values())
    assert facts["files"] == len(manifest["files"])
    assert [(s["name"], s["class"], s["serializer"]) for s in facts["steps"]] == [
        ("preprocess[0]", "sklearn.compose.ColumnTransformer", "native"),
        ("postprocess[0]", "sklearn.preprocessing.LabelEncoder", "native"),
    ]
    assert facts["model"]["outputs"][0]["shape"] == [None, 3]
    assert facts["custom_objects"] == []
    rows = {row["package"]: row for row in facts["environment"]}
    assert rows["scikit-learn"]["saved"] == manifest["environment"]["scikit-learn"]
    assert rows["scikit-learn"]["differs"] is False  # saved by this very environment


def test_inspect_marks_the_parts_that_need_trusted(release_root):
    text = run("inspect", release_root, "--version", "2.0.0")
    as_json = run("inspect", f"{release_root}@2.0.0", "--json")
    assert text.returncode == 0 and as_json.returncode == 0, text.stderr + as_json.stderr
    lines = text.stdout.splitlines()
    pickled = next(line for line in lines if ".pkl" in line and line.split()[0] == "preprocess[1]")
    assert "cloudpickle" in pickled and "needs trusted=True" in pickled
    native = next(line for line in lines if line.split()[:1] == ["preprocess[0]"])
    assert "needs trusted=True" not in native
    trust = text.stdout.split("\nTrust\n", 1)[1].split("\n\n", 1)[0]
    assert "1 part(s) execute stored code" in trust
    assert "steps/001-pre-functiontransformer.pkl" in trust and "unpickling runs code" in trust
    facts = json.loads(as_json.stdout)
    assert facts["version"] == "2.0.0" and facts["needs_trusted"] is True
    (part,) = facts["trusted_parts"]
    assert part["file"] == "steps/001-pre-functiontransformer.pkl"
    assert part["serializer"] == "cloudpickle"
    assert part["what"] == "sklearn.preprocessing.FunctionTransformer"


@pytest.mark.parametrize("version", ["1.0.0", "2.0.0"])
def test_inspect_and_the_model_card_agree(release_root, version):
    version_dir = release_root / version
    facts = json.loads(run("inspect", version_dir, "--json").stdout)
    text = run("inspect", version_dir).stdout
    load_snippet = card_section(version_dir, "Load")
    assert ("trusted=True" in load_snippet) is facts["needs_trusted"]
    for line in card_section(version_dir, "Input").splitlines():
        assert f"  {line}\n" in text
    card_steps = card_section(version_dir, "Steps").splitlines()
    assert len(card_steps) == len(facts["steps"])
    for card_line, step in zip(card_steps, facts["steps"], strict=True):
        assert card_line.startswith(f"- {step['name']}: `{step['class']}` ({step['serializer']}")
        assert ("needs trusted=True" in card_line) is step["executes_code"]
    model_lines = card_section(version_dir, "Model").splitlines()
    signature_lines = [line for line in model_lines if line.startswith(("- input", "- output"))]
    assert len(signature_lines) == len(facts["model"]["inputs"]) + len(facts["model"]["outputs"])
    for line in signature_lines:
        name, signature = line.split("`")[1], line.split("`: ")[1]
        assert any(name in row and row.endswith(signature) for row in text.splitlines())
    backend = facts["model"]["backend"]
    assert f"- saved on Keras' `{backend['name']}` backend {backend['version']}" in model_lines[-1]
    assert f"saved on Keras' {backend['name']} backend {backend['version']}" in text


def test_inspect_an_array_bundle(image_bundle):
    version_dir, _ = image_bundle
    result = run("inspect", version_dir, "--json")
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    assert (facts["name"], facts["version"]) == ("digits", "3")
    assert facts["input_schema"]["kind"] == "array"
    assert facts["input_schema"]["shape"] == [8, 8, 1]
    assert facts["input_schema"]["dtype"] == "uint8"
    assert facts["steps"] == []
    text = run("inspect", version_dir).stdout
    assert "Array input" in text and "(None, 8, 8, 1)" in text
    assert "Steps\n  (none)" in text


def test_inspect_does_not_import_keras_or_tensorflow(tabular_bundle):
    version_dir, _ = tabular_bundle
    result = run_python(
        f"""
        import sys
        sys.modules["keras"] = None
        sys.modules["tensorflow"] = None
        import bundle.cli
        assert bundle.cli.main(["inspect", {str(version_dir)!r}]) == 0
        assert bundle.cli.main(["inspect", {str(version_dir)!r}, "--json"]) == 0
        """
    )
    assert "churn 1.0.0" in result.stdout
    assert '"name": "churn"' in result.stdout


def test_light_commands_never_import_tensorflow(root_copy, tmp_path):
    """inspect, list, tag, archive, diff and verify --no-load, in one fresh process."""
    code = f"""
        import json, sys
        import fsspec
        from click.testing import CliRunner
        from bundle.cli import cli

        root = {str(root_copy)!r}
        runner = CliRunner()
        results = {{}}

        def invoke(name, *args):
            result = runner.invoke(cli, list(args))
            results[name] = [result.exit_code, result.stdout, repr(result.exception)]

        invoke("inspect", "inspect", root + "/1.0.0")
        invoke("inspect-json", "inspect", root, "--json")
        invoke("tag", "tag", root, "production", "1.0.0")
        invoke("list", "list", root)
        invoke("list-json", "list", root, "--json")
        invoke("gc", "gc", root, "--delete")
        invoke("archive", "archive", root + "@production", {str(tmp_path / "c.zip")!r})
        invoke("inspect-archive", "inspect", {str(tmp_path / "c.zip")!r}, "--json")
        invoke("diff", "diff", root + "/1.0.0", root + "/2.0.0")
        invoke("verify", "verify", root + "/1.0.0", "--no-load")
        invoke("verify-untrusted", "verify", root + "/2.0.0", "--json")
        fs = fsspec.filesystem("memory")
        for path in fsspec.filesystem("file").find(root + "/1.0.0"):
            fs.pipe_file(
                "/remote/churn/1.0.0/" + path[len(root + "/1.0.0/"):], open(path, "rb").read()
            )
        invoke("inspect-url", "inspect", "memory://remote/churn", "--json")
        invoke("list-url", "list", "memory://remote/churn", "--json")
        results["imported"] = sorted(m for m in ("tensorflow", "keras") if m in sys.modules)
        print(json.dumps(results))
        """
    results = json.loads(run_python(code).stdout.splitlines()[-1])
    assert results.pop("imported") == []
    untrusted = results.pop("verify-untrusted")
    for name, (code_, out, exception) in results.items():
        assert code_ == 0, (name, out, exception)
    assert results["inspect"][1].startswith("churn 1.0.0")
    assert json.loads(results["inspect-json"][1])["version"] == "2.0.0"  # the highest
    listed = json.loads(results["list-json"][1])
    assert [(v["version"], v["aliases"]) for v in listed] == [
        ("1.0.0", ["production"]),
        ("2.0.0", []),
    ]
    assert json.loads(results["inspect-archive"][1])["version"] == "1.0.0"
    assert "+ columns.tenure" in results["diff"][1]
    assert "PASS  files" in results["verify"][1]
    remote = json.loads(results["inspect-url"][1])
    assert remote["location"] == "memory://remote/churn/1.0.0"
    assert remote["version"] == "1.0.0"
    assert json.loads(results["list-url"][1])[0]["version"] == "1.0.0"
    # Refused before anything is unpickled or TensorFlow imported: a FAIL, exit code 1.
    assert untrusted[0] == 1
    report = json.loads(untrusted[1])
    assert report["ok"] is False
    assert [c["name"] for c in report["checks"] if not c["passed"]] == ["load"]
    assert "--trusted" in report["checks"][-1]["detail"]


# ---------------------------------------------------------------------------- verify
@pytest.mark.slow
def test_verify_passes_on_a_good_bundle(tabular_bundle):
    version_dir, _ = tabular_bundle
    result = run("verify", version_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[1].rstrip(":") for line in lines[:-1]] == [
        "manifest",
        "files",
        "load",
        "environment",
        "example",
        "example",
    ]
    assert all(line.startswith("PASS  ") for line in lines[:-1])
    assert lines[-1] == "bundle 'churn' 1.0.0: verified"


def test_verify_fails_on_a_tampered_copy(tabular_bundle, bundle_copy):
    version_dir, _ = tabular_bundle
    copy = bundle_copy(version_dir)
    with open(copy / "steps" / "000-pre-columntransformer.npz", "ab") as handle:
        handle.write(b"tampered")
    text, as_json = run_many([["verify", str(copy)], ["verify", str(copy), "--json"]])
    assert text.returncode == 1 and as_json.returncode == 1
    assert "FAIL  files" in text.stdout
    assert "steps/000-pre-columntransformer.npz" in text.stdout
    assert text.stdout.splitlines()[-1] == "bundle 'churn' 1.0.0: FAILED (1 of 2 checks)"
    assert "Traceback" not in text.stdout + text.stderr
    report = json.loads(as_json.stdout)
    assert report["ok"] is False
    assert [(c["name"], c["passed"]) for c in report["checks"]] == [
        ("manifest", True),
        ("files", False),
    ]


# ---------------------------------------------------------------------------- list and tag
def test_list_shows_versions_sizes_and_aliases_after_tag(root_copy):
    tagged = run("tag", root_copy, "production", "1.0.0")
    assert tagged.returncode == 0, tagged.stderr
    assert tagged.stdout.strip() == f"production -> 1.0.0 under {root_copy}"
    moved, also = run_many(
        [
            ["tag", str(root_copy), "production", "2.0.0"],
            ["tag", str(root_copy), "staging", "2.0.0"],
        ]
    )
    assert moved.returncode == 0 and also.returncode == 0
    assert moved.stdout.strip().endswith("(was 1.0.0)")
    text, as_json = run_many([["list", str(root_copy)], ["list", str(root_copy), "--json"]])
    assert text.returncode == 0 and as_json.returncode == 0
    header, first, second = text.stdout.splitlines()
    assert header.split() == ["version", "created", "size", "digest", "aliases"]
    assert first.split()[0] == "1.0.0" and first.split()[-2] == "KiB"
    digest = digest_of(root_copy / "1.0.0")
    assert first.split()[-1] == digest[: len("sha256:") + 12]
    assert second.split()[0] == "2.0.0"
    assert second.endswith("production, staging")
    listed = json.loads(as_json.stdout)
    assert [v["aliases"] for v in listed] == [[], ["production", "staging"]]
    expected = json.loads((root_copy / "1.0.0" / "manifest.json").read_text())
    assert listed[0]["size"] == sum(e["size"] for e in expected["files"].values())
    assert listed[0]["created"] == expected["created"]
    assert listed[0]["digest"] == digest


def test_tag_an_unknown_version_is_an_error(root_copy):
    result = run("tag", root_copy, "production", "9.9.9")
    assert result.returncode == 1
    assert result.stderr.startswith("Error: Cannot tag 'production': no version '9.9.9'")
    assert "Traceback" not in result.stderr
    assert not (root_copy / ".aliases" / "production.json").exists()


def test_list_of_a_version_directory_points_at_its_root(tabular_bundle):
    version_dir, _ = tabular_bundle
    result = run("list", version_dir)
    assert result.returncode == 1
    assert f"bundle list {version_dir.parent}" in result.stderr


# ---------------------------------------------------------------------------- archive
def test_archive_then_load(release_root, tmp_path, tabular_data):
    output = tmp_path / "churn-1.0.0.tar.gz"
    result = run("archive", release_root, output, "--version", "1.0.0")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"Archived bundle 'churn' 1.0.0 to {output} (")
    loaded = Bundle.load(output)
    assert (loaded.manifest.name, loaded.manifest.version) == ("churn", "1.0.0")
    frame, _ = tabular_data
    expected = Bundle.load(release_root, version="1.0.0").predict(frame.iloc[:20])
    np.testing.assert_array_equal(loaded.predict(frame.iloc[:20]), expected)
    again, forced = run_many(
        [
            ["archive", str(release_root), str(output), "--version", "1.0.0"],
            ["archive", str(release_root / "1.0.0"), str(tmp_path / "other.tar.gz"), "--force"],
        ]
    )
    assert again.returncode == 1
    assert again.stderr.startswith(f"Error: {output} already exists")
    assert forced.returncode == 0
    # Reproducible: the same version archived twice gives the same bytes.
    assert (tmp_path / "other.tar.gz").read_bytes() == output.read_bytes()


# ---------------------------------------------------------------------------- diff
def test_diff_names_what_changed(release_root):
    a, b = release_root / "1.0.0", release_root / "2.0.0"
    text, as_json, strict, same = run_many(
        [
            ["diff", str(a), str(b)],
            ["diff", str(a), str(b), "--json"],
            ["diff", str(a), str(b), "--exit-code"],
            ["diff", str(a), f"{release_root}@1.0.0", "--exit-code"],
        ]
    )
    assert text.returncode == 0 and as_json.returncode == 0, text.stderr
    assert strict.returncode == 1 and strict.stdout == text.stdout
    assert same.returncode == 0
    assert "No differences" in same.stdout
    out = text.stdout
    assert out.splitlines()[:2] == [f"--- a: churn 1.0.0 ({a})", f"+++ b: churn 2.0.0 ({b})"]
    for line in [
        "  + columns.tenure: float float64",
        "  ~ columns.visits.kind: integer -> float",
        "  ~ columns.visits.dtype: int64 -> float64",
        "  + preprocess[1]: sklearn.preprocessing.FunctionTransformer (cloudpickle)",
        "  ~ auc: 0.91 -> 0.93",
        '  + data: "v2"',
    ]:
        assert line + "\n" in out, out
    assert "environment" not in out  # both saved by this process
    assert "weights" not in out  # the same trained model
    report = json.loads(as_json.stdout)
    assert report["identical"] is False
    assert (report["a"]["version"], report["b"]["version"]) == ("1.0.0", "2.0.0")
    changes = {(c["section"], c["path"]): c for c in report["changes"]}
    assert changes["input_schema", "columns.tenure"]["change"] == "added"
    assert changes["input_schema", "columns.visits.dtype"] == {
        "section": "input_schema",
        "path": "columns.visits.dtype",
        "change": "changed",
        "a": "int64",
        "b": "float64",
    }
    assert changes["metadata", "auc"]["a"] == 0.91 and changes["metadata", "auc"]["b"] == 0.93
    assert changes["metadata", "data"]["change"] == "added"
    assert changes["steps", "preprocess[1]"]["change"] == "added"
    assert {section for section, _ in changes} == {"input_schema", "steps", "metadata"}


def test_diff_of_unrelated_bundles_compares_the_model_inside(tabular_bundle, image_bundle):
    (tabular, _), (image, _) = tabular_bundle, image_bundle
    result = run("diff", tabular, image, "--json")
    assert result.returncode == 0, result.stderr
    changes = {(c["section"], c["path"]): c for c in json.loads(result.stdout)["changes"]}
    assert changes["name", "name"]["a"] == "churn" and changes["name", "name"]["b"] == "digits"
    assert changes["input_schema", "kind"] == {
        "section": "input_schema",
        "path": "kind",
        "change": "changed",
        "a": "tabular",
        "b": "array",
    }
    assert changes["model", "weights"]["change"] == "changed"
    assert changes["model", "architecture"]["change"] == "changed"
    assert changes["steps", "preprocess[0]"]["change"] == "removed"
    assert changes["steps", "postprocess[0]"]["a"] == "sklearn.preprocessing.LabelEncoder (native)"


# ---------------------------------------------------------------------------- predict
def _write_input(frame: pd.DataFrame, path: Path) -> None:
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)  # floats as repr: lossless
    elif path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:  # JSON Lines by the json module: shortest exact float repr, null for NaN
        with open(path, "w", encoding="utf-8") as handle:
            for record in frame.to_dict(orient="records"):
                clean = {
                    k: None if isinstance(v, float) and math.isnan(v) else v
                    for k, v in record.items()
                }
                handle.write(json.dumps(clean) + "\n")


def _read_output(path: Path) -> pd.DataFrame:
    if path.suffix == ".csv":
        return pd.read_csv(path, dtype={"customer_id": str})
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    with open(path, encoding="utf-8") as handle:
        return pd.DataFrame([json.loads(line) for line in handle])


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_predict_file_matches_bundle_predict(tabular_bundle, tmp_path, suffix):
    version_dir, saved = tabular_bundle
    frame, _ = make_tabular_frame(57, seed=7)
    frame.insert(0, "customer_id", [f"c{i:04d}" for i in range(len(frame))])
    source, output = tmp_path / f"rows{suffix}", tmp_path / f"predictions{suffix}"
    _write_input(frame, source)
    result = run(
        "predict", version_dir, source, "-o", output,
        "--id-column", "customer_id", "--scores", "--batch-size", "20", "--progress",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Wrote 57 prediction(s) of bundle 'churn' 1.0.0")
    # The progress bar, forced on (stderr is a pipe); Parquet metadata gives it a total.
    assert "Scoring" in result.stderr
    assert ("57/57" if suffix == ".parquet" else "Scoring: 57 rows") in result.stderr
    got = _read_output(output)
    features = frame.drop(columns="customer_id")
    classes = list(saved.postprocess[0].classes_)
    assert list(got.columns) == ["customer_id", "prediction", *[f"score_{c}" for c in classes]]
    assert got["customer_id"].tolist() == frame["customer_id"].tolist()
    assert got["prediction"].tolist() == saved.predict(features).tolist()
    scores = saved.predict(features, postprocess=False)
    np.testing.assert_allclose(got[[f"score_{c}" for c in classes]], scores, rtol=0, atol=1e-6)


@pytest.mark.slow
def test_predict_without_progress_flag_on_a_pipe_shows_no_bar(tabular_bundle, tmp_path):
    version_dir, saved = tabular_bundle
    frame, _ = make_tabular_frame(10, seed=3)
    frame.to_csv(tmp_path / "rows.csv", index=False)
    result = run("predict", version_dir, tmp_path / "rows.csv", "-o", tmp_path / "out.csv")
    assert result.returncode == 0, result.stderr
    assert "Scoring" not in result.stderr
    got = pd.read_csv(tmp_path / "out.csv")
    assert list(got.columns) == ["prediction"]
    assert got["prediction"].tolist() == saved.predict(frame).tolist()


def test_predict_refuses_a_missing_input_before_loading(tabular_bundle, tmp_path):
    version_dir, _ = tabular_bundle
    result = run("predict", version_dir, tmp_path / "nope.csv", "-o", tmp_path / "out.csv")
    assert result.returncode == 1
    assert result.stderr == f"Error: No input file at {tmp_path / 'nope.csv'}.\n"
    assert not (tmp_path / "out.csv").exists()


# ---------------------------------------------------------------------------- serve
def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_serve_answers_predictions_until_terminated(tabular_bundle, tabular_data):
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("bundle.serve")
    version_dir, saved = tabular_bundle
    frame, _ = tabular_data
    port, grpc_port = _free_port(), _free_port()
    server = subprocess.Popen(
        [BUNDLE, "serve", str(version_dir), "--port", str(port), "--max-batch-size", "64",
         "--max-wait-ms", "1", "--log-level", "warning", "--grpc-port", str(grpc_port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, server.communicate()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not get ready"
            time.sleep(0.5)
        rows = json.loads(frame.iloc[:7].to_json(orient="records"))
        response = httpx.post(f"http://127.0.0.1:{port}/predict", json={"records": rows})
        assert response.status_code == 200, response.text
        assert response.json()["predictions"] == saved.predict(frame.iloc[:7]).tolist()
        with socket.create_connection(("127.0.0.1", grpc_port), timeout=10):
            pass  # the gRPC port listens too (tests/test_serve.py speaks to it)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            _, errors = server.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            _, errors = server.communicate()
    assert "Traceback" not in errors
    # uvicorn finishes the requests in flight, then re-raises SIGTERM: killed by it, as asked.
    assert server.returncode in (0, -signal.SIGTERM), errors


@pytest.mark.slow
def test_export_writes_a_saved_model_and_refuses_an_unknown_format(tabular_bundle, tmp_path):
    version_dir, _ = tabular_bundle
    out = tmp_path / "exported"
    result = run("export", version_dir, out)
    assert result.returncode == 0, result.stderr
    assert f"exported bundle 'churn' 1.0.0 to {out}" in result.stdout
    assert (out / "saved_model.pb").is_file()
    again = run("export", version_dir, out)
    assert again.returncode == 1 and "Error: " in again.stderr and "Traceback" not in again.stderr
    bad = run("export", version_dir, tmp_path / "x", "--format", "onnx")
    assert bad.returncode == 2 and "onnx" in bad.stderr
