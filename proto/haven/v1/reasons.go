package havenv1

// ReasonSitePaused is the PolicyReason code of a task refused because its
// site is paused by its provider. The coordinator shows such a site as
// SITE_STATE_PAUSED rather than as refusing, whether it learned of the
// pause at registration or from the refusal.
const ReasonSitePaused = "site_paused"
