"""dcmtk's storescp as a C-MOVE / send destination that keeps what it receives bit for bit."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.factory import dataset_start
from tests.node import free_port, port_accepts, wait_until
from tests.peers import dcmtk_env, dcmtk_tool


class StoreScp:
    """dcmtk's storescp as a move destination, keeping what it receives bit for bit."""

    def __init__(self, workdir: Path, ae_title: str = "DEST", accept_compressed: bool = True,
                 port: int | None = None) -> None:
        self.ae_title = ae_title
        self.port = port or free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        self.out = workdir / f"received-{ae_title}"
        self.out.mkdir(parents=True)
        self.log = workdir / f"storescp-{ae_title}.log"
        accepted = ["+xa"] if accept_compressed else []  # without it, storescp accepts uncompressed syntaxes only
        with open(self.log, "w") as output:
            self.process = subprocess.Popen(
                [dcmtk_tool("storescp"), "-d", "+B", *accepted, "-aet", ae_title, "-od", str(self.out),
                 str(self.port)],
                stdout=output, stderr=subprocess.STDOUT, env=dcmtk_env())
        wait_until(lambda: port_accepts(self.port), 10, "storescp")

    def received(self) -> dict[str, bytes]:
        found = {}
        for path in self.out.iterdir():
            data = path.read_bytes()
            found[path.name.split(".", 1)[1]] = data[dataset_start(data):]
        return found

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
