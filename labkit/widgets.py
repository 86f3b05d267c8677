"""ipywidgets skins over the notebooks' parameters: seeded from them, re-running the step on change.

Under papermill the widgets just render with the parameter values; the notebook's own cells
compute the recorded result from the parameters, so headless runs never depend on a widget.
"""

from __future__ import annotations

from typing import Any

from labkit import sizing

DTYPES = ["auto", "half", "bfloat16", "float32"]


def sizing_form(
    model: str,
    *,
    plan: str | None = None,
    dtype: str = "auto",
    max_model_len: int = 0,
    gpu_memory_utilization: float = 0.9,
    kv_cache_gib: float = 0.0,
) -> Any:
    """A form for model, plan, dtype, max_model_len and utilisation that re-sizes on every change.

    The returned box carries ``.fields`` (name -> widget), ``.report`` (the last sizing) and
    ``.error`` (the last error, or None).
    """
    import ipywidgets as w
    import matplotlib.pyplot as plt
    from IPython.display import display

    names = [p.name for p in sizing.load_catalogue().plans]
    model_box = w.Text(value=model, description="model", layout=w.Layout(width="60%"))
    plan_box = w.Dropdown(
        options=[("smallest that fits", "")] + [(n, n) for n in names],
        value=plan or "",
        description="plan",
    )
    dtype_box = w.Dropdown(options=DTYPES, value=dtype, description="dtype")
    len_box = w.IntText(
        value=max_model_len, description="max len", tooltip="0 = the model's own limit"
    )
    util_box = w.FloatSlider(
        value=gpu_memory_utilization, min=0.5, max=0.98, step=0.01, description="GPU util"
    )
    kv_box = w.FloatText(value=kv_cache_gib, description="KV GiB", tooltip="0 = derive from memory")
    out = w.Output()
    form = w.VBox()

    def refresh(_change: Any = None) -> None:
        out.clear_output(wait=True)
        with out:
            try:
                report = sizing.size(
                    model_box.value,
                    plan=plan_box.value or None,
                    dtype=dtype_box.value,
                    max_model_len=len_box.value or None,
                    gpu_memory_utilization=util_box.value,
                    kv_cache_gib=kv_box.value or None,
                )
            except Exception as exc:  # shown in the form; the notebook's own cell raises for real
                form.error = str(exc)
                print(f"error: {exc}")
                return
            form.report, form.error = report, None
            display(report)
            sizing.plot_budget(report)
            plt.show()

    for box in (model_box, plan_box, dtype_box, len_box, util_box, kv_box):
        box.observe(refresh, names="value")
    form.children = [
        model_box,
        w.HBox([plan_box, dtype_box]),
        w.HBox([len_box, kv_box]),
        util_box,
        out,
    ]
    # The fields, the last good report and the last error, for code that drives the form (and tests).
    form.fields = {"model": model_box, "plan": plan_box, "dtype": dtype_box, "max_model_len": len_box,
                   "kv_cache_gib": kv_box, "gpu_memory_utilization": util_box}  # fmt: skip
    form.report, form.error = None, None
    refresh()
    return form
