package no.dho.conformance;

import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.context.support.DefaultProfileValidationSupport;
import ca.uhn.fhir.context.support.IValidationSupport;
import ca.uhn.fhir.parser.IParser;
import ca.uhn.fhir.parser.LenientErrorHandler;
import ca.uhn.fhir.validation.FhirValidator;
import ca.uhn.fhir.validation.ResultSeverityEnum;
import ca.uhn.fhir.validation.SingleValidationMessage;
import ca.uhn.fhir.validation.ValidationResult;
import org.hl7.fhir.common.hapi.validation.support.CommonCodeSystemsTerminologyService;
import org.hl7.fhir.common.hapi.validation.support.InMemoryTerminologyServerValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.PrePopulatedValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.SnapshotGeneratingValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.UnknownCodeSystemWarningValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.ValidationSupportChain;
import org.hl7.fhir.common.hapi.validation.validator.FhirInstanceValidator;
import org.hl7.fhir.instance.model.api.IBaseResource;
import org.hl7.fhir.r4.model.Bundle;
import org.hl7.fhir.r4.model.CodeSystem;
import org.hl7.fhir.r4.model.MetadataResource;
import org.hl7.fhir.r4.model.Resource;
import org.hl7.fhir.r4.model.StructureDefinition;
import org.hl7.fhir.r4.model.ValueSet;
import org.hl7.fhir.r5.utils.validation.constants.BestPracticeWarningLevel;

import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Collectors;
import java.util.stream.Stream;

/**
 * Offline FHIR R4 validation for the DHO conformance fixtures.
 *
 * <pre>
 *   validate [--ig DIR]... [--verbose] [--unknown-profiles-warn] FILE-OR-DIR...
 *   core-package OUTDIR
 * </pre>
 *
 * validate: loads the R4 core definitions shipped in hapi-fhir-validation-resources-r4, plus every
 * StructureDefinition, ValueSet and CodeSystem (JSON or XML) found under each --ig directory, then
 * validates each *.json / *.xml resource given (directories are walked) against the base spec and
 * the profiles named in meta.profile. No terminology server is used: codes from code systems that
 * are not loaded (LOINC, SNOMED CT, ...) give warnings, UCUM is checked locally. One summary line
 * per file, followed by its errors (and warnings with --verbose). Exit code 1 on any error.
 *
 * core-package: writes the R4 core definitions as an NPM-style FHIR package
 * (OUTDIR/package/package.json + one JSON file per resource), so that SUSHI can resolve
 * hl7.fhir.r4.core#4.0.1 without the FHIR package registry.
 */
public final class Validate {

    private static final String[] CORE_BUNDLES = {
        "/org/hl7/fhir/r4/model/profile/profiles-types.xml",
        "/org/hl7/fhir/r4/model/profile/profiles-resources.xml",
        "/org/hl7/fhir/r4/model/profile/profiles-others.xml",
        "/org/hl7/fhir/r4/model/extension/extension-definitions.xml",
        "/org/hl7/fhir/r4/model/valueset/valuesets.xml",
        "/org/hl7/fhir/r4/model/valueset/v2-tables.xml",
        "/org/hl7/fhir/r4/model/valueset/v3-codesystems.xml",
    };

    public static void main(String[] args) throws Exception {
        if (args.length == 0) {
            usage();
        }
        String cmd = args[0];
        List<String> rest = List.of(args).subList(1, args.length);
        int rc;
        switch (cmd) {
            case "validate" -> rc = validate(rest);
            case "core-package" -> rc = corePackage(rest);
            default -> {
                usage();
                rc = 2;
            }
        }
        System.exit(rc);
    }

    private static void usage() {
        System.err.println("usage: validate [--ig DIR]... [--verbose] [--unknown-profiles-warn] FILE-OR-DIR...");
        System.err.println("       core-package OUTDIR");
        System.exit(2);
    }

    // ---------------------------------------------------------------- core-package

    private static int corePackage(List<String> args) throws IOException {
        if (args.size() != 1) {
            usage();
        }
        FhirContext ctx = FhirContext.forR4();
        IParser xml = ctx.newXmlParser();
        xml.setParserErrorHandler(new LenientErrorHandler(false));
        IParser json = ctx.newJsonParser();
        Path pkg = Paths.get(args.get(0)).resolve("package");
        Files.createDirectories(pkg);
        StringBuilder index = new StringBuilder("{\"index-version\":1,\"files\":[");
        int n = 0;
        for (String name : CORE_BUNDLES) {
            try (InputStream in = Validate.class.getResourceAsStream(name)) {
                if (in == null) {
                    throw new IOException("not on the classpath: " + name);
                }
                Bundle b = xml.parseResource(Bundle.class, in);
                for (Bundle.BundleEntryComponent e : b.getEntry()) {
                    Resource r = e.getResource();
                    if (r == null || !r.hasIdElement()) {
                        continue;
                    }
                    String type = r.fhirType();
                    String id = r.getIdElement().getIdPart();
                    String file = type + "-" + id + ".json";
                    Files.writeString(pkg.resolve(file), json.encodeResourceToString(r), StandardCharsets.UTF_8);
                    if (n++ > 0) {
                        index.append(',');
                    }
                    index.append("{\"filename\":").append(q(file))
                        .append(",\"resourceType\":").append(q(type))
                        .append(",\"id\":").append(q(id));
                    if (r instanceof MetadataResource m) {
                        if (m.hasUrl()) {
                            index.append(",\"url\":").append(q(m.getUrl()));
                        }
                        if (m.hasVersion()) {
                            index.append(",\"version\":").append(q(m.getVersion()));
                        }
                    }
                    if (r instanceof StructureDefinition sd) {
                        index.append(",\"kind\":").append(q(sd.getKind().toCode()))
                            .append(",\"type\":").append(q(sd.getType()));
                        if (sd.hasDerivation()) {
                            index.append(",\"derivation\":").append(q(sd.getDerivation().toCode()));
                        }
                    }
                    index.append('}');
                }
            }
        }
        index.append("]}");
        Files.writeString(pkg.resolve(".index.json"), index, StandardCharsets.UTF_8);
        Files.writeString(pkg.resolve("package.json"),
            "{\n  \"name\": \"hl7.fhir.r4.core\",\n  \"version\": \"4.0.1\",\n  \"type\": \"Core\",\n"
                + "  \"fhirVersions\": [\"4.0.1\"],\n  \"canonical\": \"http://hl7.org/fhir\",\n"
                + "  \"url\": \"http://hl7.org/fhir/R4\",\n"
                + "  \"description\": \"FHIR R4 core definitions, rebuilt offline from "
                + "hapi-fhir-validation-resources-r4 by the DHO conformance tool\",\n"
                + "  \"dependencies\": {}\n}\n",
            StandardCharsets.UTF_8);
        System.out.println("core-package: " + n + " resources -> " + pkg);
        return 0;
    }

    private static String q(String s) {
        StringBuilder b = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            switch (c) {
                case '"' -> b.append("\\\"");
                case '\\' -> b.append("\\\\");
                default -> {
                    if (c < 0x20) {
                        b.append(String.format("\\u%04x", (int) c));
                    } else {
                        b.append(c);
                    }
                }
            }
        }
        return b.append('"').toString();
    }

    // ---------------------------------------------------------------- validate

    private static int validate(List<String> args) throws IOException {
        List<Path> igDirs = new ArrayList<>();
        List<Path> targets = new ArrayList<>();
        boolean verbose = false;
        boolean unknownProfilesWarn = false;
        for (int i = 0; i < args.size(); i++) {
            String a = args.get(i);
            if (a.equals("--ig") && i + 1 < args.size()) {
                igDirs.add(Paths.get(args.get(++i)));
            } else if (a.equals("--unknown-profiles-warn")) {
                // R4 core only (CI): a claimed profile that is not loaded is a warning, and
                // the resource is validated against its base type.
                unknownProfilesWarn = true;
            } else if (a.equals("--verbose") || a.equals("-v")) {
                verbose = true;
            } else if (a.startsWith("-")) {
                usage();
            } else {
                targets.add(Paths.get(a));
            }
        }
        if (targets.isEmpty()) {
            usage();
        }

        FhirContext ctx = FhirContext.forR4();
        ctx.setParserErrorHandler(new LenientErrorHandler(false));

        // Conformance resources of the IGs (SUSHI output, hand-written XML/JSON). Later
        // directories win on a duplicate canonical URL.
        Map<String, IBaseResource> sds = new LinkedHashMap<>();
        Map<String, IBaseResource> vss = new LinkedHashMap<>();
        Map<String, IBaseResource> css = new LinkedHashMap<>();
        for (Path dir : igDirs) {
            for (Path f : resourceFiles(dir)) {
                IBaseResource r;
                try {
                    r = parse(ctx, f);
                } catch (Exception e) {
                    System.err.println("skip (unparseable) " + f + ": " + firstLine(e.getMessage()));
                    continue;
                }
                if (r instanceof StructureDefinition sd && sd.hasUrl()) {
                    sds.put(sd.getUrl(), sd);
                } else if (r instanceof ValueSet vs && vs.hasUrl()) {
                    vss.put(vs.getUrl(), vs);
                } else if (r instanceof CodeSystem cs && cs.hasUrl()) {
                    css.put(cs.getUrl(), cs);
                }
            }
        }
        PrePopulatedValidationSupport ig = new PrePopulatedValidationSupport(ctx);
        sds.values().forEach(ig::addStructureDefinition);
        vss.values().forEach(ig::addValueSet);
        css.values().forEach(ig::addCodeSystem);
        System.err.println("loaded " + sds.size() + " StructureDefinitions, " + vss.size()
            + " ValueSets, " + css.size() + " CodeSystems from " + igDirs.size() + " IG dir(s)");

        UnknownCodeSystemWarningValidationSupport unknownCs = new UnknownCodeSystemWarningValidationSupport(ctx);
        unknownCs.setNonExistentCodeSystemSeverity(IValidationSupport.IssueSeverity.WARNING);

        ValidationSupportChain chain = new ValidationSupportChain(
            new DefaultProfileValidationSupport(ctx),
            ig,
            new SnapshotGeneratingValidationSupport(ctx),
            new CommonCodeSystemsTerminologyService(ctx),
            new InMemoryTerminologyServerValidationSupport(ctx),
            unknownCs);

        FhirInstanceValidator module = new FhirInstanceValidator(chain);
        module.setAnyExtensionsAllowed(true);
        module.setErrorForUnknownProfiles(!unknownProfilesWarn);
        module.setBestPracticeWarningLevel(BestPracticeWarningLevel.Ignore);
        FhirValidator validator = ctx.newValidator();
        validator.registerValidatorModule(module);

        List<Path> files = new ArrayList<>();
        for (Path t : targets) {
            if (Files.isDirectory(t)) {
                files.addAll(resourceFiles(t));
            } else if (Files.isRegularFile(t)) {
                files.add(t);
            } else {
                System.out.println("FAIL " + t + ": no such file or directory");
                return 1;
            }
        }

        int failed = 0;
        int errorsTotal = 0;
        int warningsTotal = 0;
        for (Path f : files) {
            String text = Files.readString(f, StandardCharsets.UTF_8);
            ValidationResult result;
            try {
                result = validator.validateWithResult(text);
            } catch (Exception e) {
                failed++;
                errorsTotal++;
                System.out.println("FAIL " + f + ": errors=1 warnings=0");
                System.out.println("  ERROR " + firstLine(e.getMessage()));
                continue;
            }
            List<SingleValidationMessage> errors = new ArrayList<>();
            List<SingleValidationMessage> warnings = new ArrayList<>();
            for (SingleValidationMessage m : result.getMessages()) {
                ResultSeverityEnum s = m.getSeverity();
                if (s == ResultSeverityEnum.ERROR || s == ResultSeverityEnum.FATAL) {
                    errors.add(m);
                } else if (s == ResultSeverityEnum.WARNING) {
                    warnings.add(m);
                }
            }
            errorsTotal += errors.size();
            warningsTotal += warnings.size();
            if (!errors.isEmpty()) {
                failed++;
            }
            System.out.println((errors.isEmpty() ? "ok   " : "FAIL ") + f + ": errors=" + errors.size()
                + " warnings=" + warnings.size() + profiles(text));
            for (SingleValidationMessage m : errors) {
                System.out.println("  ERROR " + m.getLocationString() + ": " + firstLine(m.getMessage()));
            }
            if (verbose) {
                for (SingleValidationMessage m : warnings) {
                    System.out.println("  warn  " + m.getLocationString() + ": " + firstLine(m.getMessage()));
                }
            }
        }
        System.out.println("validated " + files.size() + " file(s): " + (files.size() - failed) + " ok, "
            + failed + " failing; " + errorsTotal + " error(s), " + warningsTotal + " warning(s)");
        return failed == 0 ? 0 : 1;
    }

    /** The meta.profile values, for the summary line (cheap text scan, JSON only). */
    private static String profiles(String text) {
        int i = text.indexOf("\"profile\"");
        if (i < 0) {
            return "";
        }
        int a = text.indexOf('"', text.indexOf('[', i) + 1);
        int b = a < 0 ? -1 : text.indexOf('"', a + 1);
        return (a < 0 || b < 0) ? "" : " profile=" + text.substring(a + 1, b);
    }

    private static IBaseResource parse(FhirContext ctx, Path f) throws IOException {
        String text = Files.readString(f, StandardCharsets.UTF_8);
        IParser p = text.stripLeading().startsWith("<") ? ctx.newXmlParser() : ctx.newJsonParser();
        return p.parseResource(text);
    }

    private static List<Path> resourceFiles(Path dir) throws IOException {
        try (Stream<Path> s = Files.walk(dir)) {
            return s.filter(Files::isRegularFile)
                .filter(p -> {
                    String n = p.getFileName().toString();
                    return (n.endsWith(".json") || n.endsWith(".xml")) && !n.startsWith(".")
                        && !n.equals("package.json") && !n.endsWith(".provenance.json");
                })
                .sorted()
                .collect(Collectors.toList());
        }
    }

    private static String firstLine(String s) {
        if (s == null) {
            return "(no message)";
        }
        int nl = s.indexOf('\n');
        return nl < 0 ? s : s.substring(0, nl);
    }

    static {
        // Keep the validator's own chatter (it logs through slf4j, bound to nop) and the
        // parser's lenient warnings off stdout.
        System.setProperty("org.slf4j.simpleLogger.defaultLogLevel", "error");
    }

    private Validate() {}
}
