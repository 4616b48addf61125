import java.io.FileDescriptor;
import java.io.FileOutputStream;
import java.nio.channels.FileChannel;
import java.nio.file.Path;

/**
 * The floor for any JVM program in bench/throughput.sh: start a JVM and copy one file to stdout with
 * FileChannel.transferTo (sendfile(2) into the pipe, no copy through user space), looking at no
 * byte. LogShip does this plus finding every line end; it cannot beat this row.
 *   javac -d DIR bench/JavaCopy.java && java -cp DIR JavaCopy FILE | cat > /dev/null
 */
public class JavaCopy {
    public static void main(String[] args) throws Exception {
        try (FileChannel in = FileChannel.open(Path.of(args[0]));
             FileChannel out = new FileOutputStream(FileDescriptor.out).getChannel()) {
            long size = in.size();
            for (long position = 0; position < size; ) {
                position += in.transferTo(position, Math.min(128 * 1024, size - position), out);
            }
        }
    }
}
