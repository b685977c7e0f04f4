package no.dho.examples;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.net.URI;
import java.net.URLEncoder;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import org.apache.avro.Schema;

/**
 * Schemas from a Confluent-compatible registry, parsed with Apache Avro as served: the hub
 * registers self-contained schemas, so no other schema needs to be known first.
 */
public final class RegistrySchemas {
    /** A registered schema and its id. */
    public record Registered(int id, Schema schema) {}

    private final String url;
    private final HttpClient http = HttpClient.newHttpClient();
    private final ObjectMapper json = new ObjectMapper();
    private final Map<Integer, Schema> byId = new ConcurrentHashMap<>();

    public RegistrySchemas(String url) {
        this.url = url.replaceAll("/+$", "");
    }

    /** The writer's schema of a record, fetched once per id. */
    public Schema byId(int id) throws IOException, InterruptedException {
        Schema known = byId.get(id);
        if (known != null) {
            return known;
        }
        Schema schema = parse(get("/schemas/ids/" + id));
        byId.put(id, schema);
        return schema;
    }

    /** The latest version registered under {@code subject} (e.g. dho.measurements-value). */
    public Registered latest(String subject) throws IOException, InterruptedException {
        String encoded = URLEncoder.encode(subject, StandardCharsets.UTF_8);
        JsonNode answer = get("/subjects/" + encoded + "/versions/latest");
        return new Registered(answer.get("id").asInt(), parse(answer));
    }

    private Schema parse(JsonNode answer) {
        return new Schema.Parser().parse(answer.get("schema").asText());
    }

    private JsonNode get(String path) throws IOException, InterruptedException {
        HttpRequest request = HttpRequest.newBuilder(URI.create(url + path))
                .header("Accept", "application/vnd.schemaregistry.v1+json")
                .GET()
                .build();
        HttpResponse<String> response = http.send(request, HttpResponse.BodyHandlers.ofString());
        if (response.statusCode() != 200) {
            throw new IOException("schema registry answered " + response.statusCode() + " to GET " + path
                    + ": " + response.body());
        }
        return json.readTree(response.body());
    }
}
