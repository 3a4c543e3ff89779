// Bouncy Castle's EST client (bcpkix 1.72, JSSE from bctls) against provisiond, for
// tests/est.rs. Arguments: <host:port> <CA file> <out dir> <device> <credential>
// <device for serverkeygen> <its credential>. Writes cacerts.pem, enrolled.crt,
// serverkeygen.crt and serverkeygen.key (PKCS#8) into the out dir; prints what
// csrattrs said; exits non-zero on any failure.

import java.io.FileInputStream;
import java.io.IOException;
import java.io.StringWriter;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.security.KeyPair;
import java.security.KeyPairGenerator;
import java.security.Security;
import java.security.cert.CertificateFactory;
import java.security.cert.TrustAnchor;
import java.security.cert.X509Certificate;
import java.security.spec.ECGenParameterSpec;
import java.util.Collections;
import javax.net.ssl.X509TrustManager;

import org.bouncycastle.asn1.x500.X500Name;
import org.bouncycastle.cert.X509CertificateHolder;
import org.bouncycastle.est.CACertsResponse;
import org.bouncycastle.est.CSRRequestResponse;
import org.bouncycastle.est.ESTService;
import org.bouncycastle.est.EnrollmentResponse;
import org.bouncycastle.est.HttpAuth;
import org.bouncycastle.est.jcajce.JcaHttpAuthBuilder;
import org.bouncycastle.est.jcajce.JcaJceUtils;
import org.bouncycastle.est.jcajce.JsseESTServiceBuilder;
import org.bouncycastle.jce.provider.BouncyCastleProvider;
import org.bouncycastle.jsse.provider.BouncyCastleJsseProvider;
import org.bouncycastle.openssl.jcajce.JcaPEMWriter;
import org.bouncycastle.operator.jcajce.JcaContentSignerBuilder;
import org.bouncycastle.pkcs.PKCS10CertificationRequest;
import org.bouncycastle.pkcs.jcajce.JcaPKCS10CertificationRequestBuilder;

public class EstClient {
    public static void main(String[] args) throws Exception {
        Security.addProvider(new BouncyCastleProvider());
        Security.addProvider(new BouncyCastleJsseProvider());
        String server = args[0];
        Path out = Paths.get(args[2]);
        X509Certificate ca;
        try (FileInputStream in = new FileInputStream(args[1])) {
            ca = (X509Certificate) CertificateFactory.getInstance("X.509").generateCertificate(in);
        }
        X509TrustManager[] trust = JcaJceUtils.getCertPathTrustManager(
                Collections.singleton(new TrustAnchor(ca, null)), null);
        ESTService est = new JsseESTServiceBuilder(server, trust).withTimeout(20000).build();

        CACertsResponse cacerts = est.getCACerts();
        write(out.resolve("cacerts.pem"), ESTService.storeToArray(cacerts.getCertificateStore()));

        CSRRequestResponse attributes = est.getCSRAttributes();
        System.out.println("csrattrs: " + (attributes.hasAttributesResponse() ? "attributes" : "none"));

        EnrollmentResponse enrolled = est.simpleEnroll(false, csr(args[3]), auth(args[3], args[4]));
        write(out.resolve("enrolled.crt"), ESTService.storeToArray(enrolled.getStore()));

        EnrollmentResponse made = est.simpleEnrollWithServersideCreation(csr(args[5]), auth(args[5], args[6]));
        write(out.resolve("serverkeygen.crt"), ESTService.storeToArray(made.getStore()));
        if (made.getPrivateKeyInfo() == null) {
            throw new IllegalStateException("serverkeygen answered no private key");
        }
        StringWriter key = new StringWriter();
        try (JcaPEMWriter pem = new JcaPEMWriter(key)) {
            pem.writeObject(new org.bouncycastle.util.io.pem.PemObject(
                    "PRIVATE KEY", made.getPrivateKeyInfo().getEncoded()));
        }
        Files.write(out.resolve("serverkeygen.key"), key.toString().getBytes(StandardCharsets.US_ASCII));
        System.out.println("done");
    }

    static HttpAuth auth(String user, String password) throws Exception {
        return new JcaHttpAuthBuilder(user, password.toCharArray()).build();
    }

    static PKCS10CertificationRequest csr(String device) throws Exception {
        KeyPairGenerator generator = KeyPairGenerator.getInstance("EC", "BC");
        generator.initialize(new ECGenParameterSpec("P-256"));
        KeyPair pair = generator.generateKeyPair();
        return new JcaPKCS10CertificationRequestBuilder(new X500Name("CN=" + device), pair.getPublic())
                .build(new JcaContentSignerBuilder("SHA256withECDSA").setProvider("BC").build(pair.getPrivate()));
    }

    static void write(Path file, X509CertificateHolder[] certificates) throws IOException {
        StringWriter text = new StringWriter();
        try (JcaPEMWriter pem = new JcaPEMWriter(text)) {
            for (X509CertificateHolder certificate : certificates) {
                pem.writeObject(certificate);
            }
        }
        Files.write(file, text.toString().getBytes(StandardCharsets.US_ASCII));
    }
}
