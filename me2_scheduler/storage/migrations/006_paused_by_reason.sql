-- The console's paused list and its counts read paused avatars by pause_reason in
-- avatar_id order (auto-paused first of all). idx_status_avatar_id alone would walk
-- every paused row, user-paused ones too, to find the few paused by failures.
-- unless index avatar_schedules.idx_status_reason_avatar_id
ALTER TABLE avatar_schedules
    ADD INDEX idx_status_reason_avatar_id (status, pause_reason, avatar_id);
