///usr/bin/env jbang "$0" "$@" ; exit $?
//JAVA 17+
//DEPS info.picocli:picocli:4.7.7

// Your sidecar for the workshop "Kubernetes sidecars with Java" (WORKSHOP.md).
// Run it:   ./jbang workshop/Sidecar.java --help
// Check it: ./jbang workshop/Check.java <step> workshop/Sidecar.java
// Stuck? workshop/solutions/StepN.java is this file as it stands at the end of step N.

import java.nio.file.Path;
import java.util.concurrent.Callable;

import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

@Command(name = "sidecar", mixinStandardHelpOptions = true,
        description = "Prints the log files of a directory to stdout.")
public class Sidecar implements Callable<Integer> {

    // Step 2, done for you as an example: the option -d, or else the environment variable LOG_DIRECTORY.
    @Option(names = {"-d", "--directory"}, required = true, defaultValue = "${env:LOG_DIRECTORY}",
            description = "Directory with the log files, created if missing (env: LOG_DIRECTORY).")
    Path directory;

    // TODO step 2: a java.util.regex.Pattern from LOG_FILE_PATTERN (default .+\.log).
    // TODO step 2: a java.time.Duration from LOG_SCAN_INTERVAL (default 10 seconds; accept 10, 10s, 500ms, 2m, 1h).
    // TODO step 5 (bonus): a Duration from LOG_DRAIN_TIMEOUT (default 5s).

    public static void main(String[] args) {
        // picocli fills the @Option fields, calls call(), and turns its result into the exit code.
        System.exit(new CommandLine(new Sidecar()).execute(args));
    }

    @Override
    public Integer call() throws Exception {
        // TODO step 2: create the directory if it is missing.
        // TODO step 2: print "watching <directory> for <pattern> every <interval>" to System.err.
        System.err.println("sidecar: configured with directory " + directory + " (nothing else yet)");

        // TODO step 3: a ticker that calls scan() now and then every interval; keep call() from returning.
        // TODO step 5: a shutdown hook that ships what is left, for at most the drain timeout.
        return 0;
    }

    // TODO step 3: void scan() — list the directory, and for each regular file whose WHOLE name
    //              matches the pattern, print its contents to System.out.
    // TODO step 4: print only the whole lines appended since the last scan (a byte offset per file).
}
