"""Agent knowledge (``configuration.knowledgeBase``): the agent's sources, chunked and
indexed in Postgres full-text search (``agent_knowledge_chunks``: a stored English
tsvector per chunk with a GIN index).

Sources (``knowledgeBase.sources``), read when the agent is saved or trained:

- a file id (``/api/files``) the saving user can read: text, Markdown, CSV, JSON or HTML;
- an ``http(s)://`` URL, fetched through the outbound guard (HTML reduced to its text);
  URL sources are fetched again when older than ``updateFrequency`` (``realtime``: one
  minute, ``daily``, ``weekly``), in the background, by the agent's actor;
- the agent's training examples (``POST /api/agents/:id/train``), one chunk each.

At call time the actor (troupe.actors.agent_db) ranks the chunks against the input
(any of its words, ``ts_rank_cd``) and puts the best ``KNOWLEDGE_CHUNKS`` into the
system prompt. Indexing lives in ``troupe.knowledge.index``.
"""
