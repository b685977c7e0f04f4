package no.dho.examples;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.ByteBuffer;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.generic.GenericDatumWriter;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.BinaryEncoder;
import org.apache.avro.io.DecoderFactory;
import org.apache.avro.io.EncoderFactory;

/**
 * The Confluent wire format for Avro: byte 0, the schema id as 4 bytes big-endian, then the
 * Avro binary body. Confluent's own Java serializers are not on Maven Central; this is all
 * of the format a client needs.
 */
public final class ConfluentWire {
    private static final byte MAGIC = 0;
    private static final int HEADER = 5;

    private ConfluentWire() {}

    /** Frames {@code record}, written with {@code schema}, as registered under {@code id}. */
    public static byte[] encode(int id, Schema schema, GenericRecord record) throws IOException {
        ByteArrayOutputStream out = new ByteArrayOutputStream(256);
        out.write(MAGIC);
        out.write(ByteBuffer.allocate(4).putInt(id).array());
        BinaryEncoder encoder = EncoderFactory.get().binaryEncoder(out, null);
        new GenericDatumWriter<GenericRecord>(schema).write(record, encoder);
        encoder.flush();
        return out.toByteArray();
    }

    /** The writer's schema id of a framed record; a clear error for anything else. */
    public static int schemaId(byte[] framed) {
        if (framed == null || framed.length < HEADER) {
            throw new IllegalArgumentException("not a Confluent-framed record: shorter than 5 bytes");
        }
        if (framed[0] != MAGIC) {
            throw new IllegalArgumentException("not a Confluent-framed record: magic byte " + framed[0]);
        }
        return ByteBuffer.wrap(framed, 1, 4).getInt();
    }

    /** Decodes a framed record written with {@code writer}. */
    public static GenericRecord decode(byte[] framed, Schema writer) throws IOException {
        schemaId(framed);
        return new GenericDatumReader<GenericRecord>(writer)
                .read(null, DecoderFactory.get().binaryDecoder(framed, HEADER, framed.length - HEADER, null));
    }
}
