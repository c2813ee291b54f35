"""The built-in junk filter's pure logic: a message's tokens (`tokens.message_tokens`) and the
Bayesian verdict over a user's trained counts (`bayes.spam_probability`, `bayes.spamtest`).

No I/O: the counts live in the store (storage `Junk`), the service that reads them and decides
is services/junk_filter.py.
"""
