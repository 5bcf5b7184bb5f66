"""Eval and comparison reports: one document model (``document``) built from an eval summary
(``eval_report``) or a comparison (``compare_report``), rendered as Markdown (``markdown``)
and as a self-contained HTML page with figures (``html``, ``figures``), written by ``write``.

The package itself exports nothing, so importing one of its modules runs no other."""
