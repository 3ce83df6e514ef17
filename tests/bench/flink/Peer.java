/*
 * The benchmark's "real peer" (tests/bench/flink_peer.py): the Apache Flink 1.20 SQL job a data
 * engineer would write instead of metadata-worker. A bounded Kafka source (earliest offset to
 * the latest offset at start, JSON batch messages), CROSS JOIN UNNEST(items) (Flink 1.20's
 * planner rejects WITH ORDINALITY here, so source_index stays NULL), and Flink's JDBC upsert
 * sink into PostgreSQL, in a local mini-cluster inside this JVM. It validates nothing and
 * replaces every field of a row wholesale (see flink_peer.py).
 *
 *   java -Xmx1g -cp CLASSES:LIBS/'*' Peer BROKERS TOPIC JDBC_URL USER TABLE PARALLELISM
 *        FLUSH_ROWS [FLUSH_INTERVAL (1s)] [KEYED_SHUFFLE (FORCE)]
 * (PGPASSWORD from the environment when the server asks for one.)
 *
 * Prints one JSON line on stdout (all times are epoch milliseconds of this JVM's clock):
 *   jvm_start_ms  the JVM's start (RuntimeMXBean)
 *   main_ms       main() entered
 *   submit_ms     executeSql(INSERT) returned (the job is submitted to the mini-cluster)
 *   first_row_ms  the first unnested item reached the projection in front of the sink
 *                 (ATTRS_JSON called for the first time: read, decoded and unnested)
 *   end_ms        await() returned: the job finished, the sink's last flush committed
 *   net_runtime_ms  Flink's own job runtime (JobExecutionResult.getNetRuntime)
 *   rows_seen     items that reached the sink's projection (after the NULL-key filter)
 */

import java.lang.management.ManagementFactory;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.LongAdder;

import org.apache.flink.api.common.JobExecutionResult;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.api.EnvironmentSettings;
import org.apache.flink.table.api.TableEnvironment;
import org.apache.flink.table.api.TableResult;
import org.apache.flink.table.data.ArrayData;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.functions.ScalarFunction;

public class Peer {

    /** attributes [{name, value}, ...] -> a JSON object text {"name": value, ...} (a null
     *  value stays a JSON null, a later duplicate name wins in jsonb); null stays null.
     *  Also records when the first row passed and counts the rows (static: one JVM). */
    public static class AttrsJson extends ScalarFunction {
        static final AtomicLong FIRST_MS = new AtomicLong();
        static final LongAdder ROWS = new LongAdder();

        public String eval(@DataTypeHint(value = "ARRAY<ROW<`name` STRING, `value` STRING>>",
                                         bridgedTo = ArrayData.class) ArrayData a) {
            ROWS.increment();
            if (FIRST_MS.get() == 0) {
                FIRST_MS.compareAndSet(0, System.currentTimeMillis());
            }
            if (a == null) {
                return null;
            }
            StringBuilder sb = new StringBuilder(64);
            sb.append('{');
            int n = a.size();
            boolean first = true;
            for (int i = 0; i < n; i++) {
                if (a.isNullAt(i)) {
                    continue;
                }
                RowData r = a.getRow(i, 2);
                if (r.isNullAt(0)) {
                    continue;
                }
                if (!first) {
                    sb.append(',');
                }
                first = false;
                quote(sb, r.getString(0).toString());
                sb.append(':');
                if (r.isNullAt(1)) {
                    sb.append("null");
                } else {
                    quote(sb, r.getString(1).toString());
                }
            }
            return sb.append('}').toString();
        }

        private static void quote(StringBuilder sb, String s) {
            sb.append('"');
            for (int i = 0; i < s.length(); i++) {
                char c = s.charAt(i);
                switch (c) {
                    case '"': sb.append("\\\""); break;
                    case '\\': sb.append("\\\\"); break;
                    case '\n': sb.append("\\n"); break;
                    case '\r': sb.append("\\r"); break;
                    case '\t': sb.append("\\t"); break;
                    default:
                        if (c < 0x20) {
                            sb.append(String.format("\\u%04x", (int) c));
                        } else {
                            sb.append(c);
                        }
                }
            }
            sb.append('"');
        }
    }

    static String lit(String s) {
        return "'" + s.replace("'", "''") + "'";
    }

    public static void main(String[] args) throws Exception {
        long mainMs = System.currentTimeMillis();
        if (args.length < 7) {
            System.err.println("usage: Peer BROKERS TOPIC JDBC_URL USER TABLE PARALLELISM"
                               + " FLUSH_ROWS [FLUSH_INTERVAL] [KEYED_SHUFFLE]");
            System.exit(2);
        }
        String brokers = args[0], topic = args[1], url = args[2], user = args[3], table = args[4];
        int parallelism = Integer.parseInt(args[5]);
        int flushRows = Integer.parseInt(args[6]);
        String flushInterval = args.length > 7 ? args[7] : "1s";
        String keyedShuffle = args.length > 8 ? args[8] : "FORCE";

        // The JDBC connector wants a username and a password or neither: without PGPASSWORD
        // (trust authentication) the user goes into the URL.
        String password = System.getenv("PGPASSWORD");
        String auth;
        if (password != null && !password.isEmpty()) {
            auth = "  'username' = " + lit(user) + ",\n  'password' = " + lit(password) + ",\n";
        } else {
            url = url + (url.contains("?") ? "&" : "?") + "user="
                  + java.net.URLEncoder.encode(user, "UTF-8");
            auth = "";
        }

        Configuration conf = new Configuration();
        conf.setString("parallelism.default", String.valueOf(parallelism));
        conf.setString("table.exec.resource.default-parallelism", String.valueOf(parallelism));
        // All items of one key through one sink connection: without it two connections
        // upsert one key at once (keys cross partitions) and PostgreSQL can deadlock them.
        conf.setString("table.exec.sink.keyed-shuffle", keyedShuffle);
        conf.setString("pipeline.name", "flink-peer " + topic);
        TableEnvironment tEnv = TableEnvironment.create(
                EnvironmentSettings.newInstance().inStreamingMode().withConfiguration(conf)
                        .build());
        tEnv.createTemporarySystemFunction("ATTRS_JSON", AttrsJson.class);

        tEnv.executeSql(
            "CREATE TABLE src (\n"
            + "  items ARRAY<ROW<externalCustomerId STRING, externalConversationId STRING,\n"
            + "    eventId STRING, status STRING, phoneNumber STRING, emailAddress STRING,\n"
            + "    userId STRING, addressCountry STRING, addressState STRING,\n"
            + "    addressZipcode STRING, attributes ARRAY<ROW<`name` STRING, `value` STRING>>>>,\n"
            + "  `topic` STRING METADATA VIRTUAL,\n"
            + "  `partition` INT METADATA VIRTUAL,\n"
            + "  `offset` BIGINT METADATA VIRTUAL\n"
            + ") WITH (\n"
            + "  'connector' = 'kafka',\n"
            + "  'topic' = " + lit(topic) + ",\n"
            + "  'properties.bootstrap.servers' = " + lit(brokers) + ",\n"
            + "  'properties.group.id' = 'flink-peer',\n"
            + "  'scan.startup.mode' = 'earliest-offset',\n"
            + "  'scan.bounded.mode' = 'latest-offset',\n"
            + "  'format' = 'json',\n"
            + "  'json.fail-on-missing-field' = 'false',\n"
            + "  'json.ignore-parse-errors' = 'true'\n"
            + ")");

        tEnv.executeSql(
            "CREATE TABLE sink (\n"
            + "  external_customer_id STRING, external_conversation_id STRING, event_id STRING,\n"
            + "  status STRING, phone_number STRING, email_address STRING, user_id STRING,\n"
            + "  address_country STRING, address_state STRING, address_zipcode STRING,\n"
            + "  attributes STRING, source_topic STRING, source_partition INT,\n"
            + "  source_offset BIGINT, source_index INT,\n"
            + "  PRIMARY KEY (external_customer_id, external_conversation_id) NOT ENFORCED\n"
            + ") WITH (\n"
            + "  'connector' = 'jdbc',\n"
            + "  'url' = " + lit(url) + ",\n"
            + "  'table-name' = " + lit(table) + ",\n"
            + auth
            + "  'sink.buffer-flush.max-rows' = '" + flushRows + "',\n"
            + "  'sink.buffer-flush.interval' = " + lit(flushInterval) + ",\n"
            + "  'sink.max-retries' = '3'\n"
            + ")");

        String insert =
            "INSERT INTO sink\n"
            + "SELECT t.externalCustomerId, t.externalConversationId, t.eventId, t.status,\n"
            + "       t.phoneNumber, t.emailAddress, t.userId, t.addressCountry, t.addressState,\n"
            + "       t.addressZipcode, ATTRS_JSON(t.attributes), s.`topic`, s.`partition`,\n"
            + "       s.`offset`, CAST(NULL AS INT)\n"
            + "FROM src AS s\n"
            + "CROSS JOIN UNNEST(s.items) AS t(externalCustomerId,\n"
            + "    externalConversationId, eventId, status, phoneNumber, emailAddress, userId,\n"
            + "    addressCountry, addressState, addressZipcode, attributes)\n"
            + "WHERE t.externalCustomerId IS NOT NULL AND t.externalConversationId IS NOT NULL";

        TableResult result = tEnv.executeSql(insert);
        long submitMs = System.currentTimeMillis();
        result.await();
        long endMs = System.currentTimeMillis();
        long net = -1;
        try {
            JobExecutionResult jr = result.getJobClient().get().getJobExecutionResult().get();
            net = jr.getNetRuntime();
        } catch (Exception e) {
            // not available: leave -1
        }
        long jvmStart = ManagementFactory.getRuntimeMXBean().getStartTime();
        System.out.println("{\"jvm_start_ms\":" + jvmStart
                           + ",\"main_ms\":" + mainMs + ",\"submit_ms\":" + submitMs
                           + ",\"first_row_ms\":" + AttrsJson.FIRST_MS.get()
                           + ",\"end_ms\":" + endMs + ",\"net_runtime_ms\":" + net
                           + ",\"rows_seen\":" + AttrsJson.ROWS.sum() + "}");
        System.out.flush();
        System.exit(0);
    }
}
