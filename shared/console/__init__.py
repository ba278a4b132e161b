"""The web console (docs/console.md): static pages under `/ui`, their queries and actions as
envelopes on `POST /ui/api` (kinds whose surfaces include CONSOLE, `shared.kinds`), and a live
stream of refresh hints on `GET /ui/events`. No build step: the pages are plain files in
`static/`, shipped in the package and in the functions' archive."""
