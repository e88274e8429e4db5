// A pgjdbc client for clients_pgtest: named server-side prepared statements (prepareThreshold=1)
// and a committed search_path that must follow the client across transactions in pgrelay's
// transaction mode.
//
// Usage: java -cp DIR:/usr/share/java/postgresql.jar JdbcClient HOST PORT CLIENT TRANSACTIONS
//
// It creates schema clients_jdbc and table clients_jdbc.t, commits
// `SET search_path TO clients_jdbc, <client>_absent, public`, then runs TRANSACTIONS short
// transactions that reuse the same PreparedStatement objects (the driver's named S_n statements on
// the server) against the unqualified table name; every tenth transaction is rolled back. The
// schema <client>_absent does not exist: it only makes every client's search_path different, so
// a setting leaking between clients is caught; the client's name is a literal in the statements'
// text, so a mix-up of two clients' S_n changes the results. Any mismatch exits with status 1
// and a message on stderr; success prints one line:
//
//   JdbcClient <id>: ok transactions=N committed=C rows=C pids=P1,P2

import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.LinkedHashSet;
import java.util.Properties;
import java.util.Set;
import java.util.StringJoiner;

public final class JdbcClient {
  private static final String SCHEMA = "clients_jdbc";
  /** Serialises CREATE SCHEMA/TABLE IF NOT EXISTS between concurrent clients. */
  private static final int DDL_LOCK = 7302;

  private static String client = "?";
  /** Where the client is, for the message of an unexpected SQLException. */
  private static String step = "connect";

  private JdbcClient() {}

  private static void fail(String message) {
    System.err.println("JdbcClient " + client + ": FAILED: " + message);
    System.exit(1);
  }

  private static void expect(boolean condition, String message) {
    if (!condition) {
      fail(message);
    }
  }

  private static String text(Statement statement, String query) throws SQLException {
    try (ResultSet rs = statement.executeQuery(query)) {
      expect(rs.next(), query + " returned no row");
      return rs.getString(1);
    }
  }

  public static void main(String[] args) throws Exception {
    if (args.length != 4) {
      System.err.println("usage: JdbcClient HOST PORT CLIENT TRANSACTIONS");
      System.exit(2);
    }
    client = args[2];
    if (!client.matches("[a-z0-9_]+")) {
      fail("CLIENT must match [a-z0-9_]+");
    }
    final String searchPath = SCHEMA + ", " + client + "_absent, public";
    final String literal = "'" + client + "'";
    final int transactions = Integer.parseInt(args[3]);
    final String url = "jdbc:postgresql://" + args[0] + ":" + args[1] + "/app";
    Properties props = new Properties();
    props.setProperty("user", System.getenv().getOrDefault("PGUSER", "app"));
    props.setProperty("password", System.getenv().getOrDefault("PGPASSWORD", "app"));
    props.setProperty("sslmode", "disable");
    // Named server-side statements from the first execution on.
    props.setProperty("prepareThreshold", "1");
    props.setProperty("connectTimeout", "10");
    props.setProperty("ApplicationName", "JdbcClient");

    long committed = 0;
    long committedSum = 0;
    long rows = -1;
    Set<Integer> pids = new LinkedHashSet<>();
    try (Connection conn = DriverManager.getConnection(url, props)) {
      step = "setup";
      conn.setAutoCommit(false);
      try (Statement st = conn.createStatement()) {
        // Schema and table, qualified: the search_path is not set yet.
        st.execute("SELECT pg_advisory_xact_lock(" + DDL_LOCK + ")");
        st.execute("CREATE SCHEMA IF NOT EXISTS " + SCHEMA);
        st.execute(
            "CREATE TABLE IF NOT EXISTS " + SCHEMA + ".t (client text NOT NULL, n int NOT NULL)");
        conn.commit();
        st.execute("SET search_path TO " + searchPath);
        conn.commit();
      }

      try (Statement st = conn.createStatement();
          PreparedStatement insert =
              conn.prepareStatement("INSERT INTO t (client, n) VALUES (" + literal + ", ?)");
          PreparedStatement total =
              conn.prepareStatement(
                  "SELECT count(*), coalesce(sum(n), 0), current_setting('search_path'),"
                      + " (SELECT relnamespace::regnamespace::text FROM pg_class"
                      + "  WHERE oid = 't'::regclass), pg_backend_pid()"
                      + " FROM t WHERE client = " + literal)) {
        for (int i = 0; i < transactions; ++i) {
          final String where = "transaction " + i;
          step = where;
          final String shown = text(st, "SHOW search_path");
          expect(
              searchPath.equals(shown),
              where + ": SHOW search_path = '" + shown + "', want '" + searchPath + "'");

          insert.setInt(1, i);
          final int inserted = insert.executeUpdate();
          expect(inserted == 1, where + ": insert inserted " + inserted + " rows");

          try (ResultSet rs = total.executeQuery()) {
            expect(rs.next(), where + ": no row from the total query");
            final long count = rs.getLong(1);
            final long sum = rs.getLong(2);
            final String path = rs.getString(3);
            final String schema = rs.getString(4);
            pids.add(rs.getInt(5));
            expect(
                count == committed + 1 && sum == committedSum + i,
                where + ": total = (" + count + ", " + sum + "), want (" + (committed + 1) + ", "
                    + (committedSum + i) + ")");
            expect(
                searchPath.equals(path),
                where + ": current_setting('search_path') = '" + path + "'");
            expect(SCHEMA.equals(schema), where + ": 't' resolved into schema " + schema);
          }

          if (i % 10 == 9) {
            conn.rollback();
          } else {
            conn.commit();
            committed += 1;
            committedSum += i;
          }
        }

        step = "final check";
        try (ResultSet rs = total.executeQuery()) {
          expect(rs.next(), "final: no row from the total query");
          rows = rs.getLong(1);
          final long sum = rs.getLong(2);
          expect(
              rows == committed && sum == committedSum,
              "final total = (" + rows + ", " + sum + "), want (" + committed + ", " + committedSum
                  + ")");
        }
        conn.commit();
      }
    } catch (SQLException e) {
      fail(
          step + ": " + e.getClass().getSimpleName() + " " + e.getSQLState() + ": "
              + e.getMessage());
    }

    StringJoiner joined = new StringJoiner(",");
    for (int pid : pids) {
      joined.add(Integer.toString(pid));
    }
    System.out.println(
        "JdbcClient " + client + ": ok transactions=" + transactions + " committed=" + committed
            + " rows=" + rows + " pids=" + joined);
  }
}
