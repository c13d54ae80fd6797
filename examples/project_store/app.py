"""The hybrid store pattern: JSON projects with their PDFs, kept through a Hold.

ColorRM-style apps keep projects in IndexedDB for speed and push them to a Hugging Face
dataset every 30 seconds, losing the queue when the Space restarts. Here each save lands
in the local tier at once (a crash loses nothing acknowledged), the Hold's syncer pushes it
to the remote in the background, and a new container on an empty disk reads every project
back from the remote on first use.

    python examples/project_store/app.py save demo "My project" notes.pdf
    python examples/project_store/app.py list
    python examples/project_store/app.py show demo

The remote comes from CARGOHOLD_REMOTE (e.g. s3://bucket/projects); unset, the embedded
default is used.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cargohold


@dataclass
class Project:
    project_id: str
    title: str
    pages: list[dict[str, object]] = field(default_factory=list)
    pdfs: list[str] = field(default_factory=list)
    updated: float = 0.0


class ProjectStore:
    """Projects under ``projects/<id>/``: ``project.json`` and ``pdfs/<name>``."""

    def __init__(self, hold: cargohold.Hold) -> None:
        self.hold = hold

    def save(self, project: Project, pdfs: dict[str, bytes] | None = None) -> None:
        """Returns as soon as the local tier has it; the remote gets it in the background."""
        for name, data in (pdfs or {}).items():
            self.hold.put(f"projects/{project.project_id}/pdfs/{name}", data)
            if name not in project.pdfs:
                project.pdfs.append(name)
        project.updated = time.time()
        body = json.dumps(project.__dict__, indent=2).encode()
        self.hold.put(
            f"projects/{project.project_id}/project.json",
            body,
            metadata={"title": project.title},
        )

    def load(self, project_id: str) -> Project:
        data = json.loads(self.hold.get(f"projects/{project_id}/project.json"))
        return Project(**data)

    def pdf(self, project_id: str, name: str) -> Path:
        """A local file of the PDF, for libraries that want a path (a PDF renderer)."""
        return self.hold.path(f"projects/{project_id}/pdfs/{name}")

    def list(self) -> list[str]:
        return sorted(
            info.key.split("/")[1]
            for info in self.hold.list("projects/")
            if info.key.endswith("/project.json")
        )

    def delete(self, project_id: str) -> None:
        for info in list(self.hold.list(f"projects/{project_id}/")):
            self.hold.delete(info.key)


def main(argv: list[str]) -> None:
    with cargohold.open() as hold:
        store = ProjectStore(hold)
        command = argv[0] if argv else "list"
        if command == "save":
            project_id, title, *pdf_paths = argv[1:]
            pdfs = {Path(p).name: Path(p).read_bytes() for p in pdf_paths}
            store.save(Project(project_id, title), pdfs)
            print(f"saved {project_id}; pending sync: {hold.status().pending_count} write(s)")
        elif command == "show":
            print(json.dumps(store.load(argv[1]).__dict__, indent=2))
        else:
            for project_id in store.list():
                print(project_id)


if __name__ == "__main__":
    main(sys.argv[1:])
