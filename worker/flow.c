/*
 * flow: polling, pausing, keepalive, backoff and the stop deadline; see flow.h.
 */
#include "flow.h"

#include <stdlib.h>
#include <string.h>

#include "../common/log.h"
#include "ingest_state.h"
#include "kafka.h"

void flow_heartbeat(ingest *ing) { atomic_store(&ing->m->heartbeat_ms, now_ms()); }

bool flow_kafka_refused(ingest *ing) {
    const char *msg, *error, *reason;
    if (!kafka_refused(&msg, &error, &reason)) return false;
    if (!ing->fatal)
        log_write(LOG_ERROR, msg, LF_S("error", error), LF_S("reason", reason), LF_END);
    ing->fatal = true;
    return true;
}

void flow_poll_consumer(ingest *ing, int timeout_ms) {
    rd_kafka_message_t *rkm = rd_kafka_consumer_poll(ing->consumer, timeout_ms);
    if (rkm) pending_consume(ing, rkm);
    partitions_assign_recorded(ing);
    flow_kafka_refused(ing);
}

void flow_pause(ingest *ing, bool pause) {
    if (ing->paused == pause) return;
    rd_kafka_topic_partition_list_t *a = NULL;
    if (rd_kafka_assignment(ing->consumer, &a) == RD_KAFKA_RESP_ERR_NO_ERROR && a) {
        if (a->cnt) {
            if (pause) rd_kafka_pause_partitions(ing->consumer, a);
            else rd_kafka_resume_partitions(ing->consumer, a);
        }
        atomic_store(&ing->m->paused_partitions, pause ? a->cnt : 0);
        rd_kafka_topic_partition_list_destroy(a);
    }
    ing->paused = pause;
    log_write(LOG_DEBUG, pause ? "partitions paused" : "partitions resumed", LF_END);
}

bool flow_stopping(ingest *ing) {
    if (*ing->run) return false;
    if (!ing->deadline_ms) ing->deadline_ms = now_ms() + ing->cfg->shutdown_timeout_ms;
    return true;
}

bool flow_past_deadline(ingest *ing) { return flow_stopping(ing) && now_ms() >= ing->deadline_ms; }

int64_t flow_backoff_ms(const ingest *ing, int attempt) {
    int64_t d = 100;
    for (int i = 0; i < attempt && d < ing->cfg->retry_max_ms; i++) d *= 2;
    return d > ing->cfg->retry_max_ms ? ing->cfg->retry_max_ms : d;
}

void flow_keepalive(ingest *ing, int ms) {
    flow_pause(ing, true);
    int64_t end = now_ms() + ms;
    do {
        flow_heartbeat(ing);
        rd_kafka_poll(ing->producer, 0);
        int64_t left = end - now_ms();
        flow_poll_consumer(ing, left > 100 ? 100 : (int)(left > 0 ? left : 0));
    } while (now_ms() < end && !ing->fatal && !flow_past_deadline(ing));
}

bool flow_backoff(ingest *ing, int attempt, const char *what, const char *error) {
    int64_t d = flow_backoff_ms(ing, attempt);
    d = d / 2 + rand() % (d / 2 + 1); /* jitter: workers do not retry in step */
    if (strcmp(what, "database") == 0) metrics_count_db_retry(ing->m, error);
    log_write(attempt > 2 ? LOG_WARN : LOG_INFO, "retrying", LF_S("what", what),
              LF_S("error", error), LF_I("attempt", attempt), LF_I("delay_ms", d), LF_END);
    flow_keepalive(ing, (int)d);
    return !ing->fatal && !flow_past_deadline(ing);
}
