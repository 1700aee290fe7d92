"""The answer-review loop: sample pairs for a clinician, score a build against their verdicts, and
apply the verdicts during a build.

- keys:      review keys that survive template rewording, and answer comparison
- sheet:     the review sheet (CSV): columns, reading and validation, writing
- score:     outcomes, rates with Wilson intervals, the printed and markdown tables (`qa-eval --review`)
- sample:    stratified, seeded sampling of a build (`qa-review sample`)
- cards:     the HTML review cards (`qa-review sample --html`)
- overrides: verdicts applied per report inside `qa-build --overrides`
"""
