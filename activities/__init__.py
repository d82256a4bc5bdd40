"""Activities: one thin, idempotent function per side effect (plan, submit, poll, cancel,
aggregate, publish, cleanup). The logic lives in plain functions (`activities.steps`) that tests
call directly; `activities.functions` registers them as activity triggers.
"""
