/*
 * Unit tests of worker/kafka's kafka_refusal: which errors librdkafka reports through error_cb
 * stop the worker (wrong SASL credentials, an untrusted broker certificate) and which are a
 * broker down or restarting, waited for (docs/contract.md §6). The reasons are librdkafka
 * 2.0.2's texts (rdkafka_broker.c, rdkafka_request.c, rdkafka_ssl.c, rdkafka_transport.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "../../worker/kafka.h"

static const struct {
    rd_kafka_resp_err_t err;
    const char *reason;
    int fatal; /* 0 waited for, 1 credentials, 2 certificate */
} rows[] = {
    {RD_KAFKA_RESP_ERR__AUTHENTICATION, "sasl_ssl://127.0.0.1:9093/bootstrap: SASL authentication "
     "error: Authentication failed: Invalid username or password (after 301ms in state AUTH_REQ)", 1},
    {RD_KAFKA_RESP_ERR__AUTHENTICATION, "sasl_ssl://b:9093/bootstrap: SASL authentication error: "
     "Authentication failed during authentication due to invalid credentials with SASL mechanism "
     "SCRAM-SHA-512 (after 309ms in state AUTH_REQ)", 1},
    {RD_KAFKA_RESP_ERR__AUTHENTICATION, "b:9093/1: SASL SCRAM-SHA-256 mechanism handshake failed: "
     "Broker: Unsupported SASL mechanism: broker's supported mechanisms: PLAIN", 1},
    {RD_KAFKA_RESP_ERR__AUTHENTICATION, "b:9093/1: Failed to initialize SASL authentication: "
     "Unsupported hash function", 1},
    {RD_KAFKA_RESP_ERR__SSL, "sasl_ssl://127.0.0.1:9093/bootstrap: SSL handshake failed: "
     "error:0A000086:SSL routines::certificate verify failed: broker certificate could not be "
     "verified, verify that ssl.ca.location is correctly configured", 2},
    {RD_KAFKA_RESP_ERR__SSL, "b:9093/1: Failed to verify broker certificate: certificate has "
     "expired", 2},
    {RD_KAFKA_RESP_ERR__SSL, "b:9093/1: Broker did not provide a certificate", 2},
    {RD_KAFKA_RESP_ERR__TRANSPORT, "b:9093/1: SSL handshake failed: error:0A000086:SSL "
     "routines::certificate verify failed", 2},
    /* Cut by the transport, or the broker down: waited for. */
    {RD_KAFKA_RESP_ERR__AUTHENTICATION, "b:9093/1: SASL SCRAM-SHA-512 mechanism handshake "
     "failed: Local: Broker transport failure: broker's supported mechanisms: (n/a)", 0},
    {RD_KAFKA_RESP_ERR__AUTHENTICATION, "b:9093/1: SASL authentication error: "
     "SaslAuthenticateRequest failed: Local: Timed out", 0},
    {RD_KAFKA_RESP_ERR__AUTHENTICATION, "b:9093/1: Disconnected", 0},
    {RD_KAFKA_RESP_ERR__SSL, "b:9093/1: SSL handshake failed: Connection reset by peer", 0},
    {RD_KAFKA_RESP_ERR__TRANSPORT, "b:9093/1: SSL handshake failed: Disconnected: connecting "
     "to a PLAINTEXT broker listener?", 0},
    {RD_KAFKA_RESP_ERR__TRANSPORT, "b:9093/bootstrap: Connect to ipv4#127.0.0.1:9093 failed: "
     "Connection refused (after 0ms in state CONNECT)", 0},
    {RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN, "1/1 brokers are down", 0},
    {RD_KAFKA_RESP_ERR__RESOLVE, "b:9093/bootstrap: Failed to resolve 'b:9093'", 0},
    {RD_KAFKA_RESP_ERR__AUTHENTICATION, NULL, 1},
    {RD_KAFKA_RESP_ERR__TRANSPORT, NULL, 0},
};

static void test_refusals(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        const char *m = kafka_refusal(rows[i].err, rows[i].reason);
        int got = !m ? 0 : strstr(m, "SASL credentials") ? 1 : strstr(m, "certificate") ? 2 : -1;
        if (got != rows[i].fatal)
            fail_msg("row %zu (%s): got %d, want %d", i, rows[i].reason ? rows[i].reason : "NULL",
                     got, rows[i].fatal);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_refusals)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
