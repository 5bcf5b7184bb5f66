"""Eval reports: Markdown and a self-contained HTML page rendered from an eval summary."""

from agebench.report.render import render_html, render_markdown, write_report

__all__ = ["render_html", "render_markdown", "write_report"]
