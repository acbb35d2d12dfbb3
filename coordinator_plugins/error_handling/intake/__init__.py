"""Intake, the first steps of a report: classify -> group -> (persist) -> hooks; and the retry runner."""
