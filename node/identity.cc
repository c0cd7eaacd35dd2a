#include "node/identity.h"

#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>

#include "meshsync/atomic_file.h"

namespace meshsync::node {
namespace {

constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
constexpr size_t kBlock = 13;  // base32 characters per check character

int IndexOf(char c) {
  if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  const char* at = std::strchr(kAlphabet, c);
  return c != '\0' && at != nullptr ? static_cast<int>(at - kAlphabet) : -1;
}

// Luhn mod 32 over a block: catches every single-character error and most
// transpositions of neighbours.
char CheckCharacter(std::string_view block) {
  int factor = 2;
  int sum = 0;
  for (size_t i = block.size(); i-- > 0;) {
    int addend = factor * IndexOf(block[i]);
    factor = factor == 2 ? 1 : 2;
    sum += addend / 32 + addend % 32;
  }
  return kAlphabet[(32 - sum % 32) % 32];
}

std::string Base32(const uint8_t* data, size_t size) {
  std::string out;
  uint32_t buffer = 0;
  int bits = 0;
  for (size_t i = 0; i < size; ++i) {
    buffer = (buffer << 8) | data[i];
    bits += 8;
    while (bits >= 5) {
      out.push_back(kAlphabet[(buffer >> (bits - 5)) & 31]);
      bits -= 5;
    }
  }
  if (bits > 0) out.push_back(kAlphabet[(buffer << (5 - bits)) & 31]);
  return out;
}

std::string OpenSslError() {
  char buffer[256] = "unknown error";
  unsigned long code = ERR_get_error();
  if (code != 0) ERR_error_string_n(code, buffer, sizeof(buffer));
  return buffer;
}

struct FileCloser {
  void operator()(FILE* f) const { std::fclose(f); }
};
using File = std::unique_ptr<FILE, FileCloser>;

// Renders a PEM object to text with `write` (PEM_write_bio_*).
Result<std::string> Pem(const std::function<bool(BIO*)>& write) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), BIO_free);
  if (bio == nullptr || !write(bio.get()))
    return InternalError("cannot encode PEM: " + OpenSslError());
  char* data = nullptr;
  long size = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(size));
}

Status Create(const std::string& cert_path, const std::string& key_path) {
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key(
      EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"), EVP_PKEY_free);
  if (key == nullptr) return InternalError("cannot generate a key: " + OpenSslError());
  std::unique_ptr<X509, decltype(&X509_free)> cert(X509_new(), X509_free);
  uint8_t serial[16];
  if (cert == nullptr || RAND_bytes(serial, sizeof(serial)) != 1) {
    return InternalError("cannot make a certificate: " + OpenSslError());
  }
  serial[0] &= 0x7f;  // a positive serial number
  BIGNUM* bn = BN_bin2bn(serial, sizeof(serial), nullptr);
  bool ok = bn != nullptr && X509_set_version(cert.get(), 2) == 1 &&
            BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert.get())) != nullptr &&
            X509_gmtime_adj(X509_getm_notBefore(cert.get()), -24L * 3600) != nullptr &&
            X509_gmtime_adj(X509_getm_notAfter(cert.get()), 20L * 365 * 24 * 3600) != nullptr &&
            X509_set_pubkey(cert.get(), key.get()) == 1;
  BN_free(bn);
  X509_NAME* name = X509_get_subject_name(cert.get());
  ok = ok &&
       X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                  reinterpret_cast<const unsigned char*>("meshsync"), -1, -1,
                                  0) == 1 &&
       X509_set_issuer_name(cert.get(), name) == 1 && X509_sign(cert.get(), key.get(), nullptr) > 0;
  if (!ok) return InternalError("cannot make a certificate: " + OpenSslError());
  MESHSYNC_ASSIGN_OR_RETURN(std::string key_pem, Pem([&](BIO* bio) {
                              return PEM_write_bio_PrivateKey(bio, key.get(), nullptr, nullptr, 0,
                                                              nullptr, nullptr) == 1;
                            }));
  MESHSYNC_ASSIGN_OR_RETURN(std::string cert_pem, Pem([&](BIO* bio) {
                              return PEM_write_bio_X509(bio, cert.get()) == 1;
                            }));
  MESHSYNC_RETURN_IF_ERROR(WriteFileAtomically(key_path, key_pem, 0600));
  return WriteFileAtomically(cert_path, cert_pem, 0644);
}

}  // namespace

Result<DeviceId> DeviceId::Parse(std::string_view text) {
  std::string clean;
  for (char c : text) {
    if (c == '-' || c == ' ') continue;
    if (IndexOf(c) < 0) {
      return InvalidArgumentError("device id has a character that is not base32: '" +
                                  std::string(1, c) + "'");
    }
    clean.push_back(static_cast<char>(kAlphabet[IndexOf(c)]));
  }
  if (clean.size() != 4 * (kBlock + 1)) {
    return InvalidArgumentError("a device id has 56 characters (8 groups of 7), not " +
                                std::to_string(clean.size()));
  }
  std::string data;
  for (size_t block = 0; block < 4; ++block) {
    std::string_view chars(clean.data() + block * (kBlock + 1), kBlock);
    if (CheckCharacter(chars) != clean[block * (kBlock + 1) + kBlock]) {
      return InvalidArgumentError("device id has a typo (check character of group " +
                                  std::to_string(block * 2 + 1) + "-" +
                                  std::to_string(block * 2 + 2) + " does not match)");
    }
    data.append(chars);
  }
  DeviceId id;
  uint32_t buffer = 0;
  int bits = 0;
  size_t out = 0;
  for (char c : data) {
    buffer = (buffer << 5) | static_cast<uint32_t>(IndexOf(c));
    bits += 5;
    if (bits >= 8) {
      if (out < id.bytes.size()) id.bytes[out++] = static_cast<uint8_t>(buffer >> (bits - 8));
      bits -= 8;
    }
  }
  // 52 characters carry 260 bits: the last 4 must be zero.
  if ((buffer & ((1u << bits) - 1)) != 0 || out != id.bytes.size()) {
    return InvalidArgumentError("device id is not canonical");
  }
  return id;
}

Result<DeviceId> DeviceId::OfCertificate(X509* cert) {
  EVP_PKEY* key = cert != nullptr ? X509_get0_pubkey(cert) : nullptr;
  if (key == nullptr) return InvalidArgumentError("certificate has no public key");
  unsigned char* der = nullptr;
  int size = i2d_PUBKEY(key, &der);
  if (size <= 0) return InvalidArgumentError("certificate's public key cannot be encoded");
  DeviceId id;
  SHA256(der, static_cast<size_t>(size), id.bytes.data());
  OPENSSL_free(der);
  return id;
}

std::string DeviceId::ToString() const {
  std::string data = Base32(bytes.data(), bytes.size());  // 52 characters
  std::string checked;
  for (size_t block = 0; block < 4; ++block) {
    std::string_view chars(data.data() + block * kBlock, kBlock);
    checked.append(chars);
    checked.push_back(CheckCharacter(chars));
  }
  std::string out;
  for (size_t i = 0; i < checked.size(); ++i) {
    if (i > 0 && i % 7 == 0) out.push_back('-');
    out.push_back(checked[i]);
  }
  return out;
}

std::string DeviceId::ShortName() const { return ToString().substr(0, 7); }

bool DeviceId::IsZero() const {
  for (uint8_t b : bytes)
    if (b != 0) return false;
  return true;
}

Result<Identity> Identity::LoadOrCreate(const std::string& home) {
  if (::mkdir(home.c_str(), 0700) != 0 && errno != EEXIST) {
    return UnavailableError("cannot create home " + home + ": " + std::strerror(errno));
  }
  Identity identity;
  identity.cert_path = home + "/cert.pem";
  identity.key_path = home + "/key.pem";
  bool have_cert = ::access(identity.cert_path.c_str(), F_OK) == 0;
  bool have_key = ::access(identity.key_path.c_str(), F_OK) == 0;
  if (have_cert != have_key) {
    return FailedPreconditionError(home + " has " + (have_cert ? "cert.pem" : "key.pem") +
                                   " without " + (have_cert ? "key.pem" : "cert.pem") +
                                   ": restore it, or remove both for a new identity");
  }
  if (!have_cert) MESHSYNC_RETURN_IF_ERROR(Create(identity.cert_path, identity.key_path));
  File file(std::fopen(identity.cert_path.c_str(), "r"));
  if (file == nullptr) return UnavailableError("cannot read " + identity.cert_path);
  std::unique_ptr<X509, decltype(&X509_free)> cert(
      PEM_read_X509(file.get(), nullptr, nullptr, nullptr), X509_free);
  if (cert == nullptr) return DataLossError(identity.cert_path + " is not a PEM certificate");
  MESHSYNC_ASSIGN_OR_RETURN(identity.id, DeviceId::OfCertificate(cert.get()));
  return identity;
}

namespace {

Result<std::unique_ptr<X509, decltype(&X509_free)>> ReadCertificate(const std::string& path) {
  File file(std::fopen(path.c_str(), "r"));
  if (file == nullptr) return UnavailableError("cannot read " + path);
  std::unique_ptr<X509, decltype(&X509_free)> cert(
      PEM_read_X509(file.get(), nullptr, nullptr, nullptr), X509_free);
  if (cert == nullptr) return DataLossError(path + " is not a PEM certificate");
  return cert;
}

}  // namespace

Result<std::string> Identity::Sign(std::string_view message) const {
  File file(std::fopen(key_path.c_str(), "r"));
  if (file == nullptr) return UnavailableError("cannot read " + key_path);
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key(
      PEM_read_PrivateKey(file.get(), nullptr, nullptr, nullptr), EVP_PKEY_free);
  if (key == nullptr) return DataLossError(key_path + " is not a PEM private key");
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  size_t size = 0;
  const auto* data = reinterpret_cast<const unsigned char*>(message.data());
  if (ctx == nullptr || EVP_DigestSignInit(ctx.get(), nullptr, nullptr, nullptr, key.get()) != 1 ||
      EVP_DigestSign(ctx.get(), nullptr, &size, data, message.size()) != 1) {
    return InternalError("cannot sign: " + OpenSslError());
  }
  std::string signature(size, '\0');
  if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(signature.data()), &size, data,
                     message.size()) != 1) {
    return InternalError("cannot sign: " + OpenSslError());
  }
  signature.resize(size);
  return signature;
}

Result<std::string> Identity::CertificateDer() const {
  MESHSYNC_ASSIGN_OR_RETURN(auto cert, ReadCertificate(cert_path));
  unsigned char* der = nullptr;
  int size = i2d_X509(cert.get(), &der);
  if (size <= 0) return InternalError("cannot encode " + cert_path);
  std::string out(reinterpret_cast<char*>(der), static_cast<size_t>(size));
  OPENSSL_free(der);
  return out;
}

Result<DeviceId> VerifySignature(std::string_view cert_der, std::string_view message,
                                 std::string_view signature) {
  const auto* p = reinterpret_cast<const unsigned char*>(cert_der.data());
  std::unique_ptr<X509, decltype(&X509_free)> cert(
      d2i_X509(nullptr, &p, static_cast<long>(cert_der.size())), X509_free);
  if (cert == nullptr) return InvalidArgumentError("the certificate is malformed");
  MESHSYNC_ASSIGN_OR_RETURN(DeviceId id, DeviceId::OfCertificate(cert.get()));
  EVP_PKEY* key = X509_get0_pubkey(cert.get());
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  if (key == nullptr || ctx == nullptr ||
      EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, key) != 1) {
    return InvalidArgumentError("the certificate's key cannot verify signatures");
  }
  if (EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(signature.data()),
                       signature.size(), reinterpret_cast<const unsigned char*>(message.data()),
                       message.size()) != 1) {
    ERR_clear_error();
    return DataLossError("the signature does not match (the data was altered, or is not " +
                         id.ShortName() + "'s)");
  }
  return id;
}

}  // namespace meshsync::node
