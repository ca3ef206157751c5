// JVM test target. Protocol as examples/probe.rs: prints `ready pid=<pid>`, then per stdin line
//   now  -> now realtime=<ns> millis=<ms> monotonic=<ns> ticks=<n>
//           (Instant.now() in ns, System.currentTimeMillis(), System.nanoTime(), and the rounds
//           of a thread doing Thread.sleep(10), to show whether timed waits keep working)
//   quit -> exits 0
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.time.Instant;
import java.util.concurrent.atomic.AtomicLong;

public class Probe {
    static final AtomicLong TICKS = new AtomicLong();

    public static void main(String[] args) throws Exception {
        Thread ticker = new Thread(() -> {
            while (true) {
                try {
                    Thread.sleep(10);
                } catch (InterruptedException e) {
                    return;
                }
                TICKS.incrementAndGet();
            }
        });
        ticker.setDaemon(true);
        ticker.start();
        System.out.println("ready pid=" + ProcessHandle.current().pid());
        System.out.flush();
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in));
        String line;
        while ((line = in.readLine()) != null) {
            switch (line.trim()) {
                case "now": {
                    Instant i = Instant.now();
                    long millis = System.currentTimeMillis();
                    long nano = System.nanoTime();
                    long rt = i.getEpochSecond() * 1_000_000_000L + i.getNano();
                    System.out.println("now realtime=" + rt + " millis=" + millis + " monotonic=" + nano
                            + " ticks=" + TICKS.get());
                    break;
                }
                case "quit":
                    System.out.flush();
                    System.exit(0);
                    break;
                default:
                    System.out.println("error unknown command \"" + line + "\"");
            }
            System.out.flush();
        }
    }
}
