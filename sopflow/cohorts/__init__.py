"""Scheduled cohorts: an SOP's `entry.schedule` enrols a cohort on a calendar (a cron in a zone,
optionally a segment) or on a contact date (a membership anniversary, a birthday) in each
contact's own zone.

    cron         cron expressions parsed into sets (pure; the schema validates with it)
    occurrences  which occurrence a run enrols for, and which contacts a contact date makes due
    select       one page of the cohort in SQL (keyset on the contact id)
    enrol        one page enrolled through the event path's steps, at a paced rate
    schedules    one Temporal Schedule per rule, reconciled with the deployed plans
    contracts    the CohortRun workflow's and activities' inputs and outputs

The Temporal pieces are workflows/cohort_run.py (the fan-out) and activities/cohort_activities.py.
Nothing is imported here: the schema imports `cron` without loading the rest.
"""
