"""The queue as people see it, the same in `postroom queue list` and in the web admin and its
API: when a recipient is tried next, who is delivering it now (the node holding its lease,
issue 16 §2), and one entry as JSON (stable keys; times in Unix seconds, as `postqueue -j`
gives them, null when there is none)."""

from __future__ import annotations

from postroom.model.queue import Recipient, RecipientState
from postroom.storage.records import Lease, QueuedRecipientView, QueueEntry

WAITING = (str(RecipientState.QUEUED), str(RecipientState.DEFERRED))


def next_attempt(rcpt: Recipient | QueuedRecipientView) -> float | None:
    """When delivery to `rcpt` is tried next; None when nothing is scheduled (delivered,
    failed, held)."""
    return rcpt.next_attempt if str(rcpt.state) in WAITING else None


def lease_of(rcpt: Recipient | QueuedRecipientView) -> Lease | None:
    """The node delivering `rcpt` now and when its lease ends; None when none is."""
    if isinstance(rcpt, QueuedRecipientView):
        return rcpt.lease
    if rcpt.lease_node is None or rcpt.lease_until is None:
        return None
    return Lease(rcpt.lease_node, rcpt.lease_until)


def entry_json(entry: QueueEntry) -> dict[str, object]:
    return {
        "id": entry.id,
        "arrival": int(entry.arrival),
        "size": entry.size,
        "sender": entry.sender,
        "held": entry.held,
        "recipients": [
            {
                "address": rcpt.address,
                "state": rcpt.state,
                "next_attempt": None if (t := next_attempt(rcpt)) is None else int(t),
                "last_reply": rcpt.last_reply or None,
                "attempts": rcpt.attempts,
                "lease": (
                    None
                    if (lease := lease_of(rcpt)) is None
                    else {"node": lease.node, "until": int(lease.until)}
                ),
            }
            for rcpt in entry.recipients
        ],
    }
