///usr/bin/env jbang "$0" "$@" ; exit $?
//JAVA 17+
//DEPS io.kubernetes:client-java:27.0.0
//DEPS org.slf4j:slf4j-nop:2.0.18
//SOURCES Check.java

// Step 6's offline check, for when there is no cluster: reads workshop/deployment.yaml with the
// official Kubernetes Java client's models (unknown fields, wrong types and unknown kinds are
// errors, as kubectl apply would report them) and checks workshop/Dockerfile's contract.
//
//   ./jbang workshop/CheckDeploy.java              (from the repository root)
//   ./jbang workshop/CheckDeploy.java DIR          checks DIR/Dockerfile and DIR/deployment.yaml instead
//
// Exit code 0 only if every check passed. The test suite calls check() in-process.

import io.kubernetes.client.openapi.models.V1Container;
import io.kubernetes.client.openapi.models.V1Deployment;
import io.kubernetes.client.openapi.models.V1EnvVar;
import io.kubernetes.client.openapi.models.V1Pod;
import io.kubernetes.client.openapi.models.V1PodSpec;
import io.kubernetes.client.openapi.models.V1Service;
import io.kubernetes.client.openapi.models.V1Volume;
import io.kubernetes.client.openapi.models.V1VolumeMount;
import io.kubernetes.client.util.Yaml;
import io.kubernetes.client.util.generic.dynamic.DynamicKubernetesObject;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Optional;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.yaml.snakeyaml.error.MarkedYAMLException;

public class CheckDeploy {

    public static void main(String[] args) throws Exception {
        Path workshop = Path.of(args.length > 0 ? args[0] : "workshop");
        for (String file : List.of("Dockerfile", "deployment.yaml"))
            if (!Files.isRegularFile(workshop.resolve(file))) {
                System.err.println("there is no " + workshop.resolve(file) + ": give a directory with a Dockerfile and a"
                        + " deployment.yaml (default: workshop, from the repository root)");
                System.exit(2);
            }
        System.out.println("Step 6: the image and the pod, checked offline  (" + workshop + ")");
        List<Check.Result> results = check(workshop);
        for (Check.Result r : results) {
            System.out.println((r.passed() ? "PASS  " : "FAIL  ") + r.check());
            if (!r.passed()) System.out.println("      " + r.hint().replace("\n", "\n      "));
        }
        long passed = results.stream().filter(Check.Result::passed).count();
        System.out.println(passed + " of " + results.size() + " checks passed" + (passed == results.size() ? ": step 6 done offline." : "."));
        System.exit(passed == results.size() ? 0 : 1);
    }

    /** Checks {@code workshop}/deployment.yaml and {@code workshop}/Dockerfile. */
    public static List<Check.Result> check(Path workshop) throws Exception {
        List<Check.Result> r = new ArrayList<>();
        String dockerfile = Files.readString(workshop.resolve("Dockerfile"));
        checkDockerfile(dockerfile, r);
        List<Object> docs;
        String yaml = Files.readString(workshop.resolve("deployment.yaml"));
        try {
            docs = parse(yaml);
            r.add(Check.Result.pass("deployment.yaml holds only valid Kubernetes objects"));
        } catch (Exception e) {
            r.add(Check.Result.fail("deployment.yaml holds only valid Kubernetes objects", problem(e, yaml)
                    + "\n(a misspelt field, kind or apiVersion, or a wrong type, such as a number where text belongs)"));
            return r;
        }
        List<V1Deployment> deployments = only(docs, V1Deployment.class);
        if (deployments.size() != 1) {
            r.add(Check.Result.fail("one Deployment", "found " + deployments.size()));
            return r;
        }
        V1PodSpec pod = deployments.get(0).getSpec().getTemplate().getSpec();
        Optional<V1Container> nginx = container(pod, "nginx");
        Optional<V1Container> sidecar = container(pod, "logshipper");
        r.add(Check.Result.of("the pod runs a container `nginx` and a container `logshipper`", nginx.isPresent() && sidecar.isPresent(),
                "containers are named " + pod.getContainers().stream().map(V1Container::getName).toList()
                        + "; `kubectl logs <pod> -c logshipper` needs that name."));
        if (nginx.isEmpty() || sidecar.isEmpty()) return r;

        Map<String, String> env = env(sidecar.get());
        String logDir = env.get("LOG_DIRECTORY");
        Optional<V1VolumeMount> nginxLogs = mount(nginx.get(), "/var/log/nginx");
        Optional<V1VolumeMount> sidecarLogs = logDir == null ? Optional.empty() : mount(sidecar.get(), logDir);
        Optional<V1Volume> shared = nginxLogs.flatMap(m -> pod.getVolumes() == null ? Optional.empty()
                : pod.getVolumes().stream().filter(v -> v.getName().equals(m.getName())).findFirst());
        r.add(Check.Result.of("nginx and the sidecar share an emptyDir: nginx at /var/log/nginx, the sidecar at its LOG_DIRECTORY",
                shared.isPresent() && shared.get().getEmptyDir() != null && sidecarLogs.isPresent()
                        && sidecarLogs.get().getName().equals(nginxLogs.get().getName()),
                "LOG_DIRECTORY is " + logDir + "; mount the same emptyDir volume in both containers, nginx's at"
                        + " /var/log/nginx and the sidecar's at LOG_DIRECTORY."));
        r.add(Check.Result.of("the sidecar mounts the logs readOnly", sidecarLogs.map(m -> Boolean.TRUE.equals(m.getReadOnly())).orElse(false),
                "add `readOnly: true` to the sidecar's volumeMount: a shipper has no business writing the app's logs."));
        String pattern = env.getOrDefault("LOG_FILE_PATTERN", ".+\\.log");
        boolean matches;
        try {
            Pattern p = Pattern.compile(pattern);
            matches = p.matcher("access.log").matches() && p.matcher("error.log").matches();
        } catch (RuntimeException e) {
            matches = false;
        }
        r.add(Check.Result.of("LOG_FILE_PATTERN matches the whole names access.log and error.log", matches,
                "LOG_FILE_PATTERN is `" + pattern + "`; nginx writes access.log and error.log."));
        String interval = env.getOrDefault("LOG_SCAN_INTERVAL", "10");
        r.add(Check.Result.of("LOG_SCAN_INTERVAL is a duration the sidecar accepts", interval.matches("\\d+(ms|s|m|h)?"),
                "LOG_SCAN_INTERVAL is `" + interval + "`; use 10, 10s, 500ms, 2m or 1h."));
        String image = Objects.toString(sidecar.get().getImage(), "");
        String policy = sidecar.get().getImagePullPolicy();
        r.add(Check.Result.of("the sidecar's image is the one the Dockerfile's build command tags, used without a registry",
                !image.isEmpty() && !image.endsWith(":latest") && image.contains(":") && dockerfile.contains("-t " + image + " ")
                        && ("IfNotPresent".equals(policy) || "Never".equals(policy)),
                "image `" + image + "`, imagePullPolicy " + policy + ". Tag the image explicitly (not :latest), use the same"
                        + " tag as the Dockerfile's `docker build -t ...` line, and set imagePullPolicy: IfNotPresent"
                        + " so the cluster uses the image you loaded instead of pulling it."));

        Map<String, String> labels = Optional.ofNullable(deployments.get(0).getSpec().getTemplate().getMetadata().getLabels()).orElse(Map.of());
        Optional<V1Service> service = only(docs, V1Service.class).stream()
                .filter(s -> "nginx-service".equals(s.getMetadata().getName())).findFirst();
        r.add(Check.Result.of("a NodePort Service nginx-service selects the pod and forwards port 80",
                service.isPresent() && "NodePort".equals(service.get().getSpec().getType())
                        && service.get().getSpec().getSelector() != null
                        && labels.entrySet().containsAll(service.get().getSpec().getSelector().entrySet())
                        && service.get().getSpec().getPorts().stream().anyMatch(p -> p.getTargetPort() != null
                                && "80".equals(p.getTargetPort().toString())),
                "the step's curl finds nginx through a Service named nginx-service, type NodePort, whose selector is"
                        + " a subset of the pod's labels " + labels + ", with targetPort 80."));
        return r;
    }

    static void checkDockerfile(String text, List<Check.Result> r) {
        List<String> froms = new ArrayList<>();
        Matcher from = Pattern.compile("(?mi)^FROM\\s+(\\S+)").matcher(text);
        while (from.find()) froms.add(from.group(1));
        r.add(Check.Result.of("the Dockerfile is multi-stage: built on a JDK, run on a JRE",
                froms.size() >= 2 && froms.get(0).contains("jdk") && froms.get(froms.size() - 1).contains("jre")
                        && text.contains("COPY --from="),
                "FROM lines: " + froms + ". Build the jar in a first stage FROM a JDK image, then COPY --from=that stage"
                        + " into a last stage FROM a JRE image."));
        r.add(Check.Result.of("the build stage uses the repo's ./jbang to export a fat jar", text.contains("./jbang export fatjar"),
                "run `./jbang export fatjar -O /out/sidecar.jar <script>`: one jar with picocli inside, for `java -jar`."));
        Matcher entry = Pattern.compile("(?m)^ENTRYPOINT\\s+(.*)$").matcher(text);
        String last = null;
        while (entry.find()) last = entry.group(1).strip();
        r.add(Check.Result.of("ENTRYPOINT is exec form and starts java, so the JVM gets SIGTERM",
                last != null && last.startsWith("[") && last.matches("\\[\\s*\"java\".*\\]"),
                "ENTRYPOINT is " + last + "; write it as a JSON array, [\"java\", \"-jar\", \"/app/sidecar.jar\"]:"
                        + " the shell form would make /bin/sh PID 1, and sh does not pass SIGTERM on."));
        List<String> missing = new ArrayList<>();
        for (String v : List.of("LOG_DIRECTORY", "LOG_FILE_PATTERN", "LOG_SCAN_INTERVAL"))
            if (!Pattern.compile("(?m)^(ENV\\s|\\s).*\\b" + v + "=").matcher(text).find()) missing.add(v);
        r.add(Check.Result.of("the image sets defaults for the three variables", missing.isEmpty(),
                "no ENV default for " + missing + "."));
    }

    /** Every document as its kind's model class; a misspelt kind or apiVersion is an error, not an untyped map. */
    static List<Object> parse(String yaml) throws Exception {
        List<Object> docs = Yaml.loadAll(yaml);
        for (Object doc : docs)
            if (doc == null || !doc.getClass().getPackageName().equals(V1Pod.class.getPackageName()))
                throw new IllegalArgumentException("not a known Kubernetes kind: " + doc);
        return docs;
    }

    /**
     * SnakeYAML wraps the problem once per enclosing object, each with a dump of that object (about
     * 180 lines for a typo in a volume mount); the innermost marked cause names the field and its line.
     */
    static String problem(Throwable e, String yaml) {
        MarkedYAMLException innermost = null;
        for (Throwable t = e; t != null; t = t.getCause())
            if (t instanceof MarkedYAMLException m && m.getProblemMark() != null) innermost = m;
        if (innermost == null) return String.valueOf(e.getMessage());
        // The client re-serialises each `---` document before it reads it into the models, so the
        // mark's line number is not the file's: find the marked line's text in the file instead.
        String marked = innermost.getProblemMark().get_snippet().lines().findFirst().orElse("").strip();
        String problem = innermost.getProblem().strip().replace(V1Pod.class.getPackageName() + ".", "")
                .replace("class: " + DynamicKubernetesObject.class.getName(), "an object of unknown kind (check kind and apiVersion)");
        if (marked.isEmpty()) return problem;
        List<String> lines = yaml.lines().toList();
        for (int i = 0; i < lines.size(); i++)
            if (withoutDash(lines.get(i)).equals(withoutDash(marked))) return problem + ", line " + (i + 1) + ": " + lines.get(i).strip();
        return problem + ", at: " + marked;
    }

    static String withoutDash(String line) {
        return line.strip().replaceFirst("^-\\s+", "");
    }

    static <T> List<T> only(List<Object> docs, Class<T> type) {
        return docs.stream().filter(type::isInstance).map(type::cast).toList();
    }

    static Optional<V1Container> container(V1PodSpec pod, String name) {
        List<V1Container> all = new ArrayList<>(Optional.ofNullable(pod.getContainers()).orElse(List.of()));
        all.addAll(Optional.ofNullable(pod.getInitContainers()).orElse(List.of())); // a native sidecar is fine too
        return all.stream().filter(c -> name.equals(c.getName())).findFirst();
    }

    static Map<String, String> env(V1Container c) {
        Map<String, String> env = new java.util.HashMap<>();
        for (V1EnvVar e : Optional.ofNullable(c.getEnv()).orElse(List.of())) env.put(e.getName(), e.getValue());
        return env;
    }

    static Optional<V1VolumeMount> mount(V1Container c, String path) {
        return Optional.ofNullable(c.getVolumeMounts()).orElse(List.of()).stream()
                .filter(m -> Path.of(m.getMountPath()).equals(Path.of(path))).findFirst();
    }
}
