using System.Buffers.Binary;
using System.Buffers.Text;

namespace Conduit.Services.Users;

/// <summary>
/// The ListUsers page token: opaque to clients; inside, a version byte and the id of the last
/// user sent (keyset pagination), base64url. The next page starts right after that id.
/// </summary>
public static class PageToken
{
    public const string TrailerName = "next-page-token";
    private const byte Version = 1;

    public static string Encode(long lastId)
    {
        Span<byte> bytes = stackalloc byte[9];
        bytes[0] = Version;
        BinaryPrimitives.WriteInt64BigEndian(bytes[1..], lastId);
        return Base64Url.EncodeToString(bytes);
    }

    public static bool TryDecode(string token, out long lastId)
    {
        lastId = 0;
        if (token.Length != 12) return false; // 9 bytes in base64url
        Span<byte> bytes = stackalloc byte[9];
        try
        {
            if (Base64Url.DecodeFromChars(token, bytes) != 9 || bytes[0] != Version) return false;
        }
        catch (FormatException)
        {
            return false;
        }
        lastId = BinaryPrimitives.ReadInt64BigEndian(bytes[1..]);
        return lastId >= 0;
    }
}
