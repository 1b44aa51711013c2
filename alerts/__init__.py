"""Alert evaluation and delivery: the evaluator (rules -> states -> notifications), the
lease that keeps it to one process per database, the notifier (webhooks, SMTP).

Pure parts (rules, the state machine, payloads, signatures) are in protocol.alerts; the
CRUD of rules is query.alerts. The runner (glowing_fiesta.runner) starts the evaluator
beside the HTTP service.
"""
