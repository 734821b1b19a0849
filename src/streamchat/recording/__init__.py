"""Recording replies into the history as they stream: O(1) per token, no I/O on the stream.

One module a job: :mod:`.reply` (:class:`~.reply.ReplyRecorder`, one reply folded with the
package's one accumulator and turned into records; the CLI drives it directly), :mod:`.commit`
(the writer thread a database's replies share), :mod:`.spool` (where records wait, durably,
while the database is away), :mod:`.tap` (a server's event stream recorded in one line,
:func:`~.tap.record_stream`), :mod:`.frames` (a resumable stream's event log, for
:mod:`streamchat.server.replies`) and :mod:`.digest` (the digest that recognises a
conversation's continuation). What records are and how a store applies them:
:mod:`streamchat.history.journal`.

The rule is "every token a client has received is in the store": a group commit per database
writes every active reply's records in one transaction every
:data:`.commit.COMMIT_SECONDS` (a reply's first commit opens its row; later ones append only
the text that streamed since), so a killed process loses at most one interval of what its
clients saw; with ``serve --history-strict`` a token leaves only once the commit that holds it
is durable. A database that is away (PostgreSQL restarting or down, even when ``serve``
starts) delays writes, never streams: records go to the spool and drain into the database, in
order, when it answers; recording is fail-soft (a refused write is logged, never raised into
the stream being recorded).
"""
