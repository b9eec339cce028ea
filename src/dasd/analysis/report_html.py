"""The self-contained `report.html`: figures inlined as base64 PNG, tables as HTML, and a
token browser (a small inline script over inlined JSON). No external scripts, styles,
fonts or images, so the page opens offline and can be mailed as one file."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from dasd.analysis.tables import Section
from dasd.analysis.tokens import foreground, legend
from dasd.stats import CATEGORY_NAMES

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;max-width:1280px;
padding:0 1.2em 3em;color:#222;line-height:1.45}
h1{margin-top:.8em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.8em}
img.fig{max-width:100%;height:auto;border:1px solid #eee}
table{border-collapse:collapse;font-size:.82em;margin:.5em 0}
th,td{border:1px solid #ddd;padding:2px 7px;text-align:right}th{background:#f4f4f4}
td:first-child,th:first-child{text-align:left}
.note{background:#fff6d6;border-left:4px solid #e0b000;padding:.3em .8em}
.about{color:#444;max-width:70em}
#tb-panel{display:grid;grid-template-columns:2fr 1fr 1fr;gap:1em}
#tb-view pre,#tb-tokens{white-space:pre-wrap;font-family:ui-monospace,Menlo,Consolas,monospace;
font-size:.85em;border:1px solid #ddd;padding:.6em;margin:0;background:#fcfcfc;min-height:4em}
.tok{border-radius:2px;cursor:help}
.tok.dep{outline:3px solid #000;outline-offset:1px;font-weight:bold}
.legend span{display:inline-block;padding:1px 6px;margin:2px 4px 2px 0;border:1px solid #aaa;
font-size:.8em}
.by-category .lg-p_base,.by-p_base .lg-category{display:none}
#tb-meta{font-size:.9em;margin:.4em 0}#tb-question{margin-bottom:.8em}
"""

JS = """
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("tb-data").textContent);
  var methodSel = document.getElementById("tb-method");
  var exampleSel = document.getElementById("tb-example");
  var tokens = document.getElementById("tb-tokens");
  function text(id, value) { document.getElementById(id).textContent = value; }
  function render(jump) {
    var list = data.examples[methodSel.value] || [];
    var ex = list[Number(exampleSel.value)];
    tokens.textContent = "";
    if (!ex) { return; }
    var frag = document.createDocumentFragment();
    var mark = null;
    ex.t.forEach(function (t, i) {
      var span = document.createElement("span");
      span.className = "tok c" + t[1] + " p" + t[2];
      span.textContent = t[0];
      span.title = t[3];
      if (i === ex.dep) {
        span.className += " dep";
        span.id = "tb-dep";
        span.title = "answer-losing departure: " + t[3];
        mark = span;
      }
      frag.appendChild(span);
    });
    tokens.appendChild(frag);
    if (mark && jump) { mark.scrollIntoView({block: "center"}); }
    text("tb-question", ex.question);
    text("tb-reference", ex.reference);
    text("tb-base", ex.base === null ? "(no base-only answer for this id: generate one " +
         "with `dasd generate --method base` into the same folder)" : ex.base);
    text("tb-meta", ex.id + " | level " + ex.level + " | answer " + ex.extracted +
         " (gold " + ex.gold + ", " + (ex.correct ? "correct" : "wrong") + ") | " +
         ex.t.length + " tokens" + (ex.dep === null || ex.dep === undefined ? "" :
         " | answer-losing departure at token " + ex.dep + " (outlined)"));
  }
  function fillExamples() {
    var list = data.examples[methodSel.value] || [];
    exampleSel.textContent = "";
    list.forEach(function (ex, i) {
      var option = document.createElement("option");
      option.value = String(i);
      option.textContent = ex.id + " (level " + ex.level + ", " +
        (ex.correct ? "correct" : "wrong") +
        (ex.dep === null || ex.dep === undefined ? "" : ", departs at token " + ex.dep) + ")";
      exampleSel.appendChild(option);
    });
    render(false);
  }
  data.methods.forEach(function (m) {
    var option = document.createElement("option");
    option.value = m;
    option.textContent = m;
    methodSel.appendChild(option);
  });
  methodSel.addEventListener("change", fillExamples);
  exampleSel.addEventListener("change", function () { render(true); });
  document.querySelectorAll("input[name=tb-color]").forEach(function (radio) {
    radio.addEventListener("change", function () {
      document.getElementById("tb-view").className = "by-" + radio.value;
    });
  });
  fillExamples();
}());
"""


def embed_png(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def _cell(value: Any) -> str:
    if value is None:
        return "&ndash;"
    if isinstance(value, float):
        return f"{value:.2f}"
    return html.escape(str(value))


def html_table(table: list[dict[str, Any]]) -> str:
    if not table:
        return "<p>(no rows)</p>"
    columns = list(dict.fromkeys(k for row in table for k in row))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_cell(row.get(c))}</td>" for c in columns) + "</tr>"
                   for row in table)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _token_css() -> str:
    rules = []
    for mode in ("category", "p_base"):
        prefix = "c" if mode == "category" else "p"
        for i, (_, color) in enumerate(legend(mode)):
            rules.append(f".by-{mode} .{prefix}{i}{{background:{color};"
                         f"color:{foreground(color)}}}")
    return "\n".join(rules)


def _legend_html() -> str:
    parts = []
    for mode in ("category", "p_base"):
        spans = "".join(f'<span style="background:{c};color:{foreground(c)}">'
                        f"{html.escape(label)}</span>" for label, c in legend(mode))
        parts.append(f'<div class="legend lg-{mode}">{spans}</div>')
    return "".join(parts)


def _browser_html(browser: dict[str, Any]) -> str:
    payload = json.dumps(browser, ensure_ascii=False, separators=(",", ":")).replace(
        "<", "\\u003c")
    return f"""
<h2 id="browser">Token browser</h2>
<p class="about">Each response token coloured by its DASD category or by its base-model
probability; hover a token for p_base, p_ref, its reference rank and category. An
outlined token is an answer-losing departure (section 4c): choosing that example jumps to
it.</p>
<p><label>method <select id="tb-method"></select></label>
<label>example <select id="tb-example"></select></label>
colour by <label><input type="radio" name="tb-color" value="category" checked> category</label>
<label><input type="radio" name="tb-color" value="p_base"> p_base</label></p>
<div id="tb-view" class="by-category">{_legend_html()}
<div id="tb-meta"></div>
<div><b>Question</b><pre id="tb-question"></pre></div>
<div id="tb-panel"><div><b>Response</b><div id="tb-tokens"></div></div>
<div><b>Reference solution</b><pre id="tb-reference"></pre></div>
<div><b>Base-only answer</b><pre id="tb-base"></pre></div></div></div>
<script type="application/json" id="tb-data">{payload}</script>
<script>{JS}</script>"""


def _summary_html(result: dict[str, Any]) -> str:
    inputs = "".join(f"<li>{html.escape(i['method'])}: {html.escape(i['path'])} "
                     f"({i['rows']} rows)</li>" for i in result["inputs"])
    notes = "".join(f'<p class="note">{html.escape(n)}</p>' for n in result["notes"])
    return (f"<p>{html.escape(result['path'])} &middot; dasd {html.escape(result['dasd_version'])}"
            f" &middot; {html.escape(result['created'])}</p><ul>{inputs}</ul>{notes}"
            f"<h2>Key numbers (all levels)</h2>{html_table(result['summary'])}"
            "<p class=\"about\">high_ppl_percent over " + ("correctly answered" if
            result["settings"]["only_correct"] else "all") + " samples; categories on "
            "correctly answered samples; top-1 agreement along each method's sequences.</p>")


def _section_html(section: Section) -> str:
    parts = [f'<h2 id="{section.key}">{html.escape(section.title)}</h2>',
             f'<p class="about">{html.escape(section.about)}</p>']
    if section.note:
        parts.append(f'<p class="note">{html.escape(section.note)}</p>')
    if section.figure is not None:
        parts.append(f'<img class="fig" id="fig-{section.key}" alt="{html.escape(section.title)}"'
                     f' src="{embed_png(section.figure)}">')
    for name, table in section.tables.items():
        parts.append(f'<details{" open" if len(table) <= 60 else ""}><summary>{name}.csv '
                     f'({len(table)} rows)</summary>{html_table(table)}</details>')
    return "\n".join(parts)


def render_report(result: dict[str, Any], sections: list[Section],
                  browser: dict[str, Any]) -> str:
    browser = {**browser, "categories": list(CATEGORY_NAMES)}
    toc = "".join(f'<a href="#{s.key}">{html.escape(s.title)}</a> &middot; ' for s in sections)
    body = "\n".join(_section_html(s) for s in sections)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>dasd analysis: {html.escape(result['path'])}</title>
<style>{CSS}{_token_css()}</style></head>
<body><h1>dasd analysis</h1>
<nav>{toc}<a href="#browser">Token browser</a></nav>
{_summary_html(result)}
{body}
{_browser_html(browser)}
</body></html>
"""
