"""What people read: Markdown reports for pull requests, charts, the nightly trend, units."""
