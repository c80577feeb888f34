"""The web dashboard: a JSON API over a store's reader, downsampling, and the static page that draws it."""
