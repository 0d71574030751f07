/* log.h - one-line, timestamped, leveled logging to stderr (thread-safe: one write per line). */
#ifndef HS_BASE_LOG_H
#define HS_BASE_LOG_H

typedef enum { HS_LOG_DEBUG, HS_LOG_INFO, HS_LOG_WARN, HS_LOG_ERROR, HS_LOG_ALERT } hs_log_level;

/* Lines below this level are dropped (default HS_LOG_INFO; HOTSERVE_LOG=debug lowers it). */
void hs_log_set_level(hs_log_level level);
void hs_log(hs_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define HS_LOGD(...) hs_log(HS_LOG_DEBUG, __VA_ARGS__)
#define HS_LOGI(...) hs_log(HS_LOG_INFO, __VA_ARGS__)
#define HS_LOGW(...) hs_log(HS_LOG_WARN, __VA_ARGS__)
#define HS_LOGE(...) hs_log(HS_LOG_ERROR, __VA_ARGS__)
#define HS_LOGA(...) hs_log(HS_LOG_ALERT, __VA_ARGS__)

#endif
