"""The HTML page: controls with one combined state, a section per figure, the glossary,
plotly.js inline once and the figures' data as JSON. Opens offline: no network requests.

Each view holds one figure per selection (key = the values of the controls it depends on,
joined by '|'). To keep the file small, a view stores a few whole figures as templates, and
every selection as its differences from the template it is closest to.
"""
from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field

CONTROL_LABELS = {"model": "Model", "device": "Device", "batch": "Batch B", "setting": "SparQ setting"}
SIGNIFICANT_DIGITS = 5  # digits kept of each number in the page


@dataclass
class View:
    id: str
    heading: str
    intro: str  # HTML: how to read the figure
    dims: tuple = ()
    states: dict = field(default_factory=dict)  # key -> figure dict
    note: str = ""  # HTML shown instead of a figure when there are no states
    missing: str = "No rows for this selection."  # HTML shown for a selection with no figure
    template_dims: tuple = ()  # controls that change most of a figure: one template per value (see pack)


_LONG_FLOAT = re.compile(r"(?<![\w.])-?\d+\.\d{8,}(?:[eE][-+]?\d+)?")  # unrounded doubles
_NOT_FINITE = re.compile(r"(?<=[\[,:])(?:NaN|-?Infinity)(?=[,\]}])")


def to_json(payload) -> str:
    """Compact JSON for a <script> element: floats cut to SIGNIFICANT_DIGITS (hover shows at most
    4), NaN and infinities as null, and no '</' that could close the element."""
    text = json.dumps(payload, separators=(",", ":"))
    short = f"%.{SIGNIFICANT_DIGITS}g"
    text = _LONG_FLOAT.sub(lambda m: short % float(m.group()), text)
    return _NOT_FINITE.sub("null", text).replace("</", "<\\/")


def pack(view: View) -> dict:
    """{id, dims, templates: [{data, layout}], states: {key: {template, data: [trace or patch], layout: patch}}}.

    One template per value of `view.template_dims` (the first figure of each), or one for all."""
    templates, which, packed = [], {}, {}
    at = [view.dims.index(d) for d in view.template_dims]
    for key, fig in view.states.items():
        parts = key.split("|")
        group = tuple(parts[i] for i in at)
        if group not in which:
            which[group] = len(templates)
            templates.append(fig)
        i = which[group]
        packed[key] = {**({"template": i} if i else {}), **_patch(fig, templates[i])}
    return {"id": view.id, "dims": list(view.dims), "templates": templates, "states": packed}


def _patch(fig: dict, template: dict) -> dict:
    """fig as {data: [trace, or {tpl: i, ...its differences from template trace i}], layout: differences}."""
    base_data, base_layout = template["data"], template["layout"]
    data = []
    for i, trace in enumerate(fig["data"]):
        if i < len(base_data) and base_data[i].get("name") == trace.get("name") and \
                base_data[i].get("type") == trace.get("type"):
            patch = {k: v for k, v in trace.items() if base_data[i].get(k) != v}
            patch.update({k: None for k in base_data[i] if k not in trace})
            data.append({"tpl": i, **patch})
        else:
            data.append(trace)
    layout = {k: v for k, v in fig["layout"].items() if base_layout.get(k) != v}
    layout.update({k: None for k in base_layout if k not in fig["layout"]})
    return {"data": data, "layout": layout}


def render_page(*, title: str, lede: str, controls: dict, initial: dict, views: list[View], glossary: list,
                provenance: list, plotly_js: str) -> str:
    payload = {"controls": controls, "initial": initial, "views": [pack(v) for v in views]}
    data_json = to_json(payload)
    selects = "\n".join(
        f'<label>{html.escape(CONTROL_LABELS.get(name, name))} '
        f'<select id="control-{name}" data-dim="{name}">'
        + "".join(f'<option value="{html.escape(v)}"{" selected" if v == initial[name] else ""}>'
                  f'{html.escape(_option_label(name, v))}</option>' for v in values)
        + "</select></label>" for name, values in controls.items())
    sections = "\n".join(_section(v) for v in views)
    terms = "\n".join(f"<dt>{html.escape(t)}</dt><dd>{d}</dd>" for t, d in glossary)
    prov = "\n".join(f"<li>{p}</li>" for p in provenance)
    return _TEMPLATE.format(title=html.escape(title), lede=lede, selects=selects, sections=sections, terms=terms,
                            provenance=prov, plotly_js=plotly_js, data_json=data_json, app_js=_APP_JS, css=_CSS)


def _option_label(name: str, value: str) -> str:
    return f"compression {value}" if name == "setting" and "=" not in value else value


def _section(v: View) -> str:
    uses = ", ".join(CONTROL_LABELS[d] for d in v.dims) or "none (all measured rows)"
    body = (f'<div class="plot" id="{v.id}"></div>'
            f'<p class="missing" id="{v.id}-missing" hidden>{v.missing}</p>') if v.states else \
        f'<div class="note" id="{v.id}-note">{v.note}</div>'
    return (f'<section id="section-{v.id}"><h2>{html.escape(v.heading)}</h2>'
            f'<p class="intro">{v.intro} <span class="uses">Controls used: {html.escape(uses)}.</span></p>'
            f"{body}</section>")


_CSS = """
body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 1280px; padding: 0 24px 48px; color: #222; }
h1 { margin: 24px 0 4px; font-size: 26px; }
h2 { margin: 32px 0 4px; font-size: 19px; border-top: 1px solid #ddd; padding-top: 16px; }
.lede { max-width: 900px; line-height: 1.45; }
.controls { position: sticky; top: 0; z-index: 10; background: #f4f6f8; border: 1px solid #d5dbe1;
            border-radius: 6px; padding: 8px 12px; display: flex; flex-wrap: wrap; gap: 8px 20px; align-items: center; }
.controls label { font-weight: 600; font-size: 14px; }
.controls select { margin-left: 6px; font-size: 14px; padding: 2px 4px; }
.intro { max-width: 1000px; line-height: 1.4; margin: 4px 0 8px; }
.uses { color: #666; font-size: 13px; }
.plot { width: 100%; min-height: 460px; }
.note, .missing { background: #fff8e1; border: 1px solid #e0c060; padding: 10px 14px; border-radius: 6px; }
dl { display: grid; grid-template-columns: 220px 1fr; gap: 6px 16px; line-height: 1.4; }
dt { font-weight: 600; }
dd { margin: 0; }
code { background: #f1f1f1; padding: 0 3px; border-radius: 3px; }
footer { margin-top: 32px; color: #555; font-size: 13px; }
"""

# One state for all controls; a change re-draws every view that depends on the changed
# control. The selection is kept in the URL fragment, so a link reproduces the view.
_APP_JS = r"""
(function () {
  "use strict";
  var R = JSON.parse(document.getElementById("report-data").textContent);
  var CONFIG = {responsive: true, displaylogo: false};
  var state = Object.assign({}, R.initial, fromHash());

  function fromHash() {
    var out = {};
    location.hash.slice(1).split("&").forEach(function (kv) {
      var i = kv.indexOf("=");
      if (i < 0) return;
      var k = decodeURIComponent(kv.slice(0, i)), v = decodeURIComponent(kv.slice(i + 1));
      if (R.controls[k] && R.controls[k].indexOf(v) >= 0) out[k] = v;
    });
    return out;
  }

  function figure(view) {
    var s = view.states[view.dims.map(function (d) { return state[d]; }).join("|")];
    if (!s) return null;
    var template = view.templates[s.template || 0];
    var data = s.data.map(function (t) {
      if (t.tpl === undefined) return t;
      var merged = Object.assign({}, template.data[t.tpl], t);
      delete merged.tpl;
      return merged;
    });
    var layout = Object.assign({}, template.layout, s.layout);
    // plotly.js annotates the objects it is given: hand it copies.
    return {data: JSON.parse(JSON.stringify(data)), layout: JSON.parse(JSON.stringify(layout))};
  }

  function render(view) {
    var div = document.getElementById(view.id);
    if (!div) return;
    var fig = figure(view);
    var missing = document.getElementById(view.id + "-missing");
    missing.hidden = !!fig;
    div.hidden = !fig;
    if (!fig) { Plotly.purge(div); return; }
    div.dataset.state = view.dims.map(function (d) { return state[d]; }).join("|");
    Plotly.react(div, fig.data, fig.layout, CONFIG);
  }

  function set(dim, value) {
    state[dim] = value;
    history.replaceState(null, "", "#" + Object.keys(state).map(function (k) {
      return encodeURIComponent(k) + "=" + encodeURIComponent(state[k]);
    }).join("&"));
    R.views.forEach(function (v) { if (v.dims.indexOf(dim) >= 0) render(v); });
  }

  document.querySelectorAll("select[data-dim]").forEach(function (sel) {
    sel.value = state[sel.dataset.dim];
    sel.addEventListener("change", function () { set(sel.dataset.dim, sel.value); });
  });
  R.views.forEach(render);
  window.sparqReport = {state: state, views: R.views};
})();
"""

_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{css}</style>
</head>
<body>
<h1>{title}</h1>
<p class="lede">{lede}</p>
<div class="controls" id="controls">{selects}</div>
{sections}
<h2 id="glossary">Terms and axes</h2>
<dl>
{terms}
</dl>
<footer><b>Provenance</b><ul>
{provenance}
</ul></footer>
<script>{plotly_js}</script>
<script type="application/json" id="report-data">{data_json}</script>
<script>{app_js}</script>
</body>
</html>
"""
