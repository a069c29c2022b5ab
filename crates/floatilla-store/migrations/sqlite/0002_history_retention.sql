-- Connection history older than the retention period is pruned by when it ended.
CREATE INDEX connection_history_by_end ON connection_history (disconnected_at)
    WHERE disconnected_at IS NOT NULL;
