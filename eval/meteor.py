"""METEOR 1.5 for generated reports, run by the reference implementation as coco-caption runs it.

Denkowski and Lavie, "Meteor Universal" (WMT 2014). The RRG papers report coco-caption's METEOR
(pycocoevalcap/meteor/meteor.py), which pipes each pair to `meteor-1.5.jar - - -stdio -l en -norm`
as "SCORE ||| reference ... ||| prediction", collects the statistics lines it answers, and asks for
the corpus score with one "EVAL ||| stats ||| stats ..." line: the answer is a score per pair and
then the corpus METEOR (from the summed statistics, not the mean of the pairs). We drive the same
jar, shipped in the pycocoevalcap wheel with its English paraphrase table, the same way, on the
R2Gen-cleaned text BLEU scores (eval/nlg.py): no PTB tokenizer, as in R2Gen's scorer.

The jar needs Java (a JRE 8 or newer). Without one, `MeteorUnavailable` says what is missing and
how to get it, and `rrg-eval` records that in metrics.json instead of a number.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Self

from eval.nlg import tokenized_pairs

JAR_ENV = "RRG_METEOR_JAR"  # another meteor-1.5.jar (its data/ folder beside it)
JAVA_HINT = "install a Java runtime (JRE 8 or newer; on Debian: apt-get install default-jre-headless)"
JAVA_HEAP = "-Xmx2G"  # coco-caption's setting; the paraphrase table needs about 1 GB


class MeteorUnavailable(RuntimeError):
    """METEOR cannot run here: no Java, or no meteor-1.5.jar."""


def meteor_jar() -> Path:
    """meteor-1.5.jar: $RRG_METEOR_JAR, else the copy in the pycocoevalcap package."""
    if os.environ.get(JAR_ENV):
        jar = Path(os.environ[JAR_ENV])
    else:
        try:
            jar = Path(str(resources.files("pycocoevalcap.meteor") / "meteor-1.5.jar"))
        except ModuleNotFoundError as error:
            raise MeteorUnavailable("METEOR needs meteor-1.5.jar: install pycocoevalcap (`make install`)") from error
    if not jar.is_file():
        raise MeteorUnavailable(f"METEOR needs meteor-1.5.jar: {jar} does not exist")
    return jar


def java_executable() -> str:
    """The `java` on PATH, or MeteorUnavailable saying how to install one."""
    java = shutil.which("java")
    if java is None:
        raise MeteorUnavailable(f"METEOR runs on Java, and there is no `java` on PATH: {JAVA_HINT}")
    return java


def _protocol_text(tokens: list[str]) -> str:
    # The jar reads one line per request and splits fields at "|||".
    return " ".join(tokens).replace("|||", "").replace("\n", " ")


class MeteorScorer:
    """One running meteor-1.5.jar (about 10 s to load its paraphrase table); use as a context manager."""

    def __init__(self, jar: Path | None = None) -> None:
        self.jar = jar or meteor_jar()
        command = [java_executable(), JAVA_HEAP, "-jar", str(self.jar), "-", "-", "-stdio", "-l", "en", "-norm"]
        # A file, so a chatty jar can never block on a full pipe; closed with the scorer.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115
        self._process = subprocess.Popen(
            command, cwd=self.jar.parent, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self._stderr, text=True, encoding="utf-8", bufsize=1,
        )
        self._lock = threading.Lock()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @property
    def running(self) -> bool:
        return self._process.poll() is None

    def close(self) -> None:
        if self._process.stdout.closed:
            return
        if self._process.poll() is None:
            self._process.stdin.close()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process.stdout.close()
        self._stderr.close()

    def _read_line(self) -> str:
        line = self._process.stdout.readline()
        if not line:
            self._stderr.seek(0)
            detail = self._stderr.read().decode("utf-8", "replace").strip().splitlines()[-3:]
            raise MeteorUnavailable(f"{self.jar.name} stopped (exit {self._process.poll()}): {' / '.join(detail)}")
        return line.strip()

    def _send(self, lines: list[str]) -> None:
        try:
            for line in lines:
                self._process.stdin.write(line + "\n")
            self._process.stdin.flush()
        except (BrokenPipeError, ValueError):
            pass  # the reader sees the jar gone and says why

    def score_tokens(self, pairs: Sequence[tuple[list[str], list[list[str]]]]) -> tuple[float, list[float]]:
        """(corpus METEOR, METEOR per pair) of tokenised (prediction, references) pairs."""
        if not pairs:
            raise ValueError("no predictions to score")
        requests = [
            " ||| ".join(["SCORE", *(_protocol_text(r) for r in references), _protocol_text(prediction)])
            for prediction, references in pairs
        ]
        with self._lock:
            # Writing every request before reading would fill both pipes; a writer thread streams them.
            writer = threading.Thread(target=self._send, args=(requests,), daemon=True)
            writer.start()
            statistics = [self._read_line() for _ in requests]
            writer.join()
            self._send(["EVAL ||| " + " ||| ".join(statistics)])
            per_pair = [float(self._read_line()) for _ in requests]
            corpus = float(self._read_line())
        return corpus, per_pair


_shared: MeteorScorer | None = None
_shared_lock = threading.Lock()


def shared_scorer() -> MeteorScorer:
    """This process's running jar, started on first use and stopped at exit (one 10 s start per process)."""
    global _shared
    with _shared_lock:
        if _shared is None or not _shared.running:
            _shared = MeteorScorer()
            atexit.register(_shared.close)
        return _shared


def meteor_score(
    predictions: Sequence[str],
    references: Sequence[str | Sequence[str]],
    prepared: bool = False,
    *,
    dataset: str = "iu_xray",
) -> dict[str, float]:
    """{"nlg/meteor": corpus METEOR}, from this process's shared jar."""
    return {"nlg/meteor": shared_scorer().score_tokens(tokenized_pairs(predictions, references, prepared, dataset))[0]}
