"""What the lab knows beyond the template, for the cross-checks: the configuration's bindings and
the results of steps 01 (sizing), 02 (download) and 04 (image), the Hub, and the templates already
published in the synced folder.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labkit.errors import ModelError
from labkit.templates.publish import published_executables

if TYPE_CHECKING:
    from labkit.config import Config
    from labkit.sizing import Catalogue
    from labkit.state import State

RevisionCheck = Callable[[str, str], "bool | None"]


@dataclass
class LintContext:
    """What the lab knows beyond the template: the configuration's bindings and each step's result.

    Given to ``lint``, it adds the cross-checks (``RULES`` from ``lab-state`` on); every
    field is optional and a check whose data is missing is skipped.
    """

    parameters: Mapping[str, Any] = field(default_factory=dict)  # the configuration's bindings
    scenario: str | None = None  # LABKIT_SCENARIO
    image: str | None = None  # the reference step 04 pushed
    model_id: str | None = None  # step 02's repo id
    revision: str | None = None  # step 02's 40-hex commit (what the artifact holds)
    revision_exists: RevisionCheck | None = None  # (repo id, revision) -> on the Hub? None: unknown
    attention_heads: int | None = None
    model_type: str | None = None
    model_max_len: int | None = None  # the model's own context length (max_position_embeddings)
    sizing: Mapping[str, Any] | None = None  # step 01's SizingReport.to_dict()
    catalogue: Catalogue | None = None  # resource plans (default: labkit.sizing's)
    executables: Mapping[str, str] = field(default_factory=dict)  # other templates: id -> file
    notes: list[str] = field(default_factory=list)  # what the lab state lacked

    @classmethod
    def from_state(
        cls,
        cfg: Config,
        state: State,
        parameters: Mapping[str, Any] | None = None,
        *,
        path_in_repo: str | None = None,
        check_hub: bool = True,
    ) -> LintContext:
        """The cross-check data from the lab state (steps 01, 02, 04) and the template repo."""
        from labkit import sizing as sizing_mod

        notes: list[str] = []
        size = state.get("size")
        if size is None:
            notes.append("no sizing result: run 01_size_model.ipynb for the plan checks")
        download = state.get("download")
        if download is None:
            notes.append("no download result: run 02_download_model.ipynb for the model checks")
        image = state.get("image")
        heads = model_type = max_len = None
        source = (download or {}).get("snapshot_dir") or cfg.model_source
        try:
            spec = sizing_mod.load_model_config(
                source, revision=(download or {}).get("revision"), token=cfg.hub_token()
            )
            heads, model_type = spec.num_attention_heads, spec.model_type
            max_len = spec.max_position_embeddings
        except Exception as exc:  # optional data: only the checks that need it are skipped
            notes.append(f"cannot read the model's config.json ({exc}): no head/length checks")
        return cls(
            parameters=dict(parameters or {}),
            scenario=cfg.scenario,
            image=(image or {}).get("reference"),
            model_id=(download or {}).get("repo_id"),
            revision=(download or {}).get("revision"),
            revision_exists=_hub_revision_check(cfg, download) if check_hub else None,
            attention_heads=heads,
            model_type=model_type,
            model_max_len=max_len,
            sizing=size,
            catalogue=sizing_mod.load_catalogue(),
            executables=published_executables(
                cfg.template_repo_dir, cfg.template_repo_path, exclude=path_in_repo
            ),
            notes=notes,
        )


def _hub_revision_check(cfg: Config, download: Mapping[str, Any] | None) -> RevisionCheck:
    """A check that a repo has a commit: the verified download proves it, else the Hub answers."""

    def check(repo_id: str, revision: str) -> bool | None:
        if (
            download
            and download.get("repo_id") == repo_id
            and download.get("revision") == revision
            and Path(str(download.get("snapshot_dir", ""))).is_dir()
        ):
            return True
        from labkit import hub

        try:
            sha, _ = hub.resolve_revision(
                repo_id, revision, endpoint=cfg.hub_endpoint, token=cfg.hub_token()
            )
        except ModelError:
            return False
        except Exception:  # unreachable Hub, odd answers: unknown, reported as a warning
            return None
        return sha == revision

    return check
