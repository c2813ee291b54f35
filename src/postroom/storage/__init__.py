"""The store: accounts, mailboxes and messages, blobs, the queue and delivery history.

`api` names what the rest of postroom may ask (typed repositories behind Protocols), `records`
what comes back, `backend` opens an implementation; `sqlite/` is the embedded one. `buffer`
holds content on its way in, `summary` the stored form of a message's IMAP summary.
"""
