"""README "Real data", followed literally: its `real.yaml` and every snakemake command of the section are
run (as dry runs, offline) from a folder laid out like the repository, with the paper preset on the command
line as written; the offline pretrained-weights variant too."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import textwrap

import pytest
from _wf import BIN, REPO, planned_jobs, snakemake_env

pytestmark = pytest.mark.slow

README = (REPO / "README.md").read_text()


def _section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end > 0 else None]


def _blocks(text: str, lang: str) -> list[str]:
    return [textwrap.dedent(b) for b in re.findall(rf"```{lang}\n(.*?)```", textwrap.dedent(text), re.S)]


@pytest.fixture()
def checkout(tmp_path):
    """A folder that looks like the repository root (links), where the README's commands run as written."""
    for name in ("Snakefile", "config.yaml", "presets", "workflow", ".venv"):
        os.symlink(REPO / name if name != ".venv" else BIN.parent, tmp_path / name)
    return tmp_path


def _dry_run(command: str, cwd) -> subprocess.CompletedProcess:
    args = shlex.split(command)
    assert args[0] == ".venv/bin/snakemake", command
    args += [a for a in ("-n", "-p") if a not in args]
    return subprocess.run(args, cwd=cwd, env=snakemake_env(), capture_output=True, text=True, timeout=600)


def test_real_data_section_runs_as_written(checkout):
    section = _section("Real data")
    assert "hf auth login" in section and "huggingface-cli" not in section
    (yaml_block,) = _blocks(section.replace("\n   ", "\n"), "yaml")
    (checkout / "real.yaml").write_text(yaml_block)
    commands = [
        ln for b in _blocks(section.replace("\n   ", "\n"), "bash") for ln in b.splitlines() if ln.strip()
    ]
    assert len(commands) == 3 and any("--workflow-profile workflow/profiles/slurm" in c for c in commands)
    for command in commands:
        assert "--configfile presets/paper.yaml real.yaml" in command, command
        proc = _dry_run(command, checkout)
        assert proc.returncode == 0, (command, proc.stdout[-3000:], proc.stderr[-3000:])
        rules = {j.rule for j in planned_jobs(proc.stdout)}
        # real data from the Hub, and the preset's pretrained Hiera fetched before training
        assert {"download", "pretrained_weights"} <= rules, (command, rules)
        assert (
            "--source huggingface" in proc.stdout
            and "--backbone hiera_base_224 --pretrained mae_in1k_ft_in1k" in proc.stdout
        )


def test_offline_pretrained_weights_as_written(checkout):
    section = _section("Real data")
    (yaml_block,) = _blocks(section.replace("\n   ", "\n"), "yaml")
    snippet = re.search(r"`(train: \{pretrained_file: ([^}]+)\})`", section)
    assert snippet and "hf download timm/hiera_base_224.mae_in1k_ft_in1k model.safetensors" in section
    (checkout / "real.yaml").write_text(yaml_block + snippet.group(1) + "\n")
    weights = checkout / snippet.group(2).strip()
    weights.parent.mkdir(parents=True)
    weights.touch()  # what `hf download ... --local-dir` leaves there
    command = next(
        ln for b in _blocks(section.replace("\n   ", "\n"), "bash") for ln in b.splitlines() if "-n" in ln
    )
    proc = _dry_run(command, checkout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "pretrained_weights" not in {j.rule for j in planned_jobs(proc.stdout)}
