"""Recording replies into the history as they stream: O(1) per token, a write now and then.

One module a job: :mod:`.reply` (:class:`~.reply.ReplyRecorder`, one reply folded with the
package's one accumulator and written as it streams; the CLI drives it directly),
:mod:`.commit` (the writer thread a store's replies share), :mod:`.tap` (a server's event
stream recorded in one line, :func:`~.tap.record_stream`) and :mod:`.digest` (the digest that
recognises a conversation's continuation). Recording is fail-soft: a history problem is
reported once, never raised into the stream being recorded.

The rule is "every token a client has received is in the store": a group commit per store
writes every active reply's new text (and its output token count so far) in one transaction
every :data:`.commit.COMMIT_SECONDS`, so a killed process loses at most one interval of
what its clients saw; with :data:`.tap.STRICT` a server waits for the commit holding a token
before sending it (commits are still shared by every stream waiting at that moment). A database
that is briefly unreachable (PostgreSQL restarting) delays writes, which are retried, never
streams.
"""
