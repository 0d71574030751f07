/* session.h - what the server asks of a backend's sessions beyond the ABI (built-in backend only). */
#ifndef HS_BACKENDS_SESSION_H
#define HS_BACKENDS_SESSION_H

#include "hotserve/backend.h"

/* The caller is done with the outputs of session's last run (backend b's run): the built-in engine
 * lends the session's scratch arena to other sessions of the same plan size until its next run
 * (engine.h, hs_engine_session_idle), so the versions of a model share arenas instead of each
 * holding its own. A no-op for a plug-in backend, whose sessions keep their memory as the ABI
 * allows. */
void hs_backend_session_idle(const hs_backend *b, hs_backend_session *session);

#endif
