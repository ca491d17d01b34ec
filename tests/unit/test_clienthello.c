/*
 * Unit tests for the ClientHello peek in funneld/clienthello.c.
 *
 * The vectors below are ClientHellos captured on loopback from real clients
 * (each connected to a listener that saved the bytes it received up to the
 * end of the ClientHello), stored as hex: OpenSSL, curl, GnuTLS (wget),
 * Chromium (BoringSSL), Python's ssl and mbedTLS.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "clienthello.h"

/* OpenSSL 3.0.19 s_client -tls1_3 -servername tls13.example.test */
static const char hex_openssl_tls13[] =
    "16030100f7010000f30303beac7dbcd5cd2c4e9d3f78fe40156d6efab1e25219"
    "d0d20fe697a8d629ad530b20bd6aef31823d44a4e221c4f1363778c2eef7f638"
    "588ec3e5954649c38929d01b000813021303130100ff010000a2000000170015"
    "000012746c7331332e6578616d706c652e74657374000b000403000102000a00"
    "160014001d0017001e0019001801000101010201030104002300000016000000"
    "170000000d001e001c040305030603080708080809080a080b08040805080604"
    "0105010601002b0003020304002d00020101003300260024001d0020d69ee0f6"
    "76c05faf3d07273193c83ed6e938c30e5a69f9872fcb5d61a207157b";

/* OpenSSL 3.0.19 s_client -tls1_2 -servername tls12.example.test */
static const char hex_openssl_tls12[] =
    "16030100d2010000ce03033071369f643f21e6a4ceea9e547166ac8892f8fa70"
    "ae4afef6737ac7983d25f0000038c02cc030009fcca9cca8ccaac02bc02f009e"
    "c024c028006bc023c0270067c00ac0140039c009c0130033009d009c003d003c"
    "0035002f00ff0100006d000000170015000012746c7331322e6578616d706c65"
    "2e74657374000b000403000102000a000c000a001d0017001e00190018002300"
    "000016000000170000000d002a0028040305030603080708080809080a080b08"
    "0408050806040105010601030303010302040205020602";

/* OpenSSL 3.0.19 s_client -noservername */
static const char hex_openssl_nosni[] =
    "16030101240100012003036f6a23c46e16d32fc5adf24203b104dd4d7eaf92f2"
    "04d4cf14e9707e5ac4b19c207bad48e2dd6b394cf78f854c18bee5912149a029"
    "306ce49c360737cd8b3e3871003e130213031301c02cc030009fcca9cca8ccaa"
    "c02bc02f009ec024c028006bc023c0270067c00ac0140039c009c0130033009d"
    "009c003d003c0035002f00ff01000099000b000403000102000a00160014001d"
    "0017001e0019001801000101010201030104002300000016000000170000000d"
    "002a0028040305030603080708080809080a080b080408050806040105010601"
    "030303010302040205020602002b0009080304030303020301002d0002010100"
    "3300260024001d00203aec8e59b2f6b2c8efcc80ee2bc444ca201b2676b50387"
    "ba3c03105c0e76c217";

/* OpenSSL 3.0.19 s_client -alpn h2,http/1.1 */
static const char hex_openssl_alpn[] =
    "16030101500100014c0303201072c2938c83ea76b85c612f746a01e6bad8160c"
    "1a387682551e9dbb2688c3201873499ff1202d46329ba2f2d7ce6ac4f8026a69"
    "045361c51e3821b3aef53d56003e130213031301c02cc030009fcca9cca8ccaa"
    "c02bc02f009ec024c028006bc023c0270067c00ac0140039c009c0130033009d"
    "009c003d003c0035002f00ff010000c5000000160014000011616c706e2e6578"
    "616d706c652e74657374000b000403000102000a00160014001d0017001e0019"
    "001801000101010201030104002300000010000e000c02683208687474702f31"
    "2e310016000000170000000d002a0028040305030603080708080809080a080b"
    "080408050806040105010601030303010302040205020602002b000908030403"
    "0303020301002d00020101003300260024001d0020a9fcf25bb7e7932e87a166"
    "3e9cdae5adfd97ae36d9be9995442e41bd96416624";

/* OpenSSL 3.0.19 s_client -max_send_frag 512 with a 24-protocol ALPN list: two records, 512 + 340 */
static const char hex_openssl_frag[] =
    "1603010200010003500303fae4fab2ea27b8d26294000e9bdc19a29d63a36b5b"
    "981c4ce7c73081020f943e20c76edf3ea16c36ac7322e8a501b6b8aedb436011"
    "8354cb95532f97d81ed786e4003e130213031301c02cc030009fcca9cca8ccaa"
    "c02bc02f009ec024c028006bc023c0270067c00ac0140039c009c0130033009d"
    "009c003d003c0035002f00ff010002c9000000160014000011667261672e6578"
    "616d706c652e74657374000b000403000102000a00160014001d0017001e0019"
    "001801000101010201030104002300000010021202101570726f746f2d30302d"
    "7878787878787878787878781570726f746f2d30312d78787878787878787878"
    "78781570726f746f2d30322d7878787878787878787878781570726f746f2d30"
    "332d7878787878787878787878781570726f746f2d30342d7878787878787878"
    "787878781570726f746f2d30352d7878787878787878787878781570726f746f"
    "2d30362d7878787878787878787878781570726f746f2d30372d787878787878"
    "7878787878781570726f746f2d30382d7878787878787878787878781570726f"
    "746f2d30392d7878787878787878787878781570726f746f2d31302d78787878"
    "78787878787878781570726f746f2d31312d7878787878787878787878781570"
    "726f746f2d31322d7878787878787878787878781570726f746f2d31332d7878"
    "7878787878160301015478787878781570726f746f2d31342d78787878787878"
    "78787878781570726f746f2d31352d7878787878787878787878781570726f74"
    "6f2d31362d7878787878787878787878781570726f746f2d31372d7878787878"
    "787878787878781570726f746f2d31382d787878787878787878787878157072"
    "6f746f2d31392d7878787878787878787878781570726f746f2d32302d787878"
    "7878787878787878781570726f746f2d32312d78787878787878787878787815"
    "70726f746f2d32322d7878787878787878787878781570726f746f2d32332d78"
    "78787878787878787878780016000000170000000d002a002804030503060308"
    "0708080809080a080b0804080508060401050106010303030103020402050206"
    "02002b0009080304030303020301002d00020101003300260024001d00201397"
    "6590294a8c4625b30d2f77fd91a7a1c2442d1c689cd4fd08ac8913de1f33";

/* curl 7.88.1 (OpenSSL 3.0.19) https://curl.example.test:PORT/ --resolve */
static const char hex_curl[] =
    "1603010200010001fc03039fd862762207255106cfb62e41051c90cf1efd1dd1"
    "2d3555773aa68b4a06cc6b20f69e20d3c405e6c82d55c1ecfde8b9e0c881c047"
    "7a318feae0e2d49013343c63003e130213031301c02cc030009fcca9cca8ccaa"
    "c02bc02f009ec024c028006bc023c0270067c00ac0140039c009c0130033009d"
    "009c003d003c0035002f00ff010001750000001600140000116375726c2e6578"
    "616d706c652e74657374000b000403000102000a00160014001d0017001e0019"
    "0018010001010102010301040010000e000c02683208687474702f312e310016"
    "00000017000000310000000d002a0028040305030603080708080809080a080b"
    "080408050806040105010601030303010302040205020602002b000908030403"
    "0303020301002d00020101003300260024001d00207f0a545d75e0624926f4bc"
    "f4788a700d655318ba0a2eecd082abf34215d99c21001500ac00000000000000"
    "0000000000000000000000000000000000000000000000000000000000000000"
    "0000000000000000000000000000000000000000000000000000000000000000"
    "0000000000000000000000000000000000000000000000000000000000000000"
    "0000000000000000000000000000000000000000000000000000000000000000"
    "0000000000000000000000000000000000000000000000000000000000000000"
    "0000000000";

/* GNU Wget 1.21.3 (GnuTLS) https://localhost:PORT/ */
static const char hex_wget[] =
    "1603010200010001fc030332b352e98741f400e52d23994d3e5f74af1a4cd8a8"
    "3a3510de6dcfe04e9f33582091a9382fbf389d122a004ad8f5b59b6a51bbbba9"
    "deae95990bfef17bcdb30a6c003a1302130313011304c02ccca9c0adc00ac02b"
    "c0acc009c030cca8c014c02fc013009dc09d0035009cc09c002f009fccaac09f"
    "0039009ec09e003301000179000500050100000000000a001600140017001800"
    "19001d001e01000101010201030104000b00020100000d002200200401080908"
    "04040308070501080a0805050308080601080b08060603020102030023000000"
    "33006b006900170041043622e87fb37e713e8bb6bd959dbc548ee98e5d86bd3e"
    "20c6c7002be8bbd5e9e268a934614ca3be6d33f8d2255e1199873d5c870d635c"
    "fe4257ac01591f7dad12001d00203904db5f0e4dd8038fb39f0a9d729397e103"
    "f80c3d5cff0056a81373394aea3d002b000908030403030302030100310000ff"
    "010001000000000e000c0000096c6f63616c686f7374002d0003020100001c00"
    "0240010015007e00000000000000000000000000000000000000000000000000"
    "0000000000000000000000000000000000000000000000000000000000000000"
    "0000000000000000000000000000000000000000000000000000000000000000"
    "0000000000000000000000000000000000000000000000000000000000000000"
    "0000000000";

/* Chromium 156 headless: GREASE, X25519MLKEM768 key share, ECH GREASE */
static const char hex_chromium1[] =
    "16030107a4010007a00303b25bab862d34cdc899e99fd0bf15e6276fef4b8688"
    "08330a95849e19b1b2bdd3201d2bca2c9118d85f7f5798bf0df5467a6c1527d4"
    "57fb3d8bb483d03fcb70d50a00208a8a130113021303c02bc02fc02cc030cca9"
    "cca8c013c014009c009d002f0035010007379a9a000044cd0005000302683200"
    "120000ca3400ba00b80582df1302010582df1302060582df13020d0582df1302"
    "0e0582df13020f0582df1302120582df1302130582df13021408839a648c9b2d"
    "010708839a648c9b2d010808839a648c9b2d010908839a648c9b2d010a08839a"
    "648c9b2d010b08839a648c9b2d010c08839a648c9b2d010d08839a648c9b2d01"
    "1208839a648c9b2d011304d679090104d679090404d679090504d679090604d6"
    "79090704d679090804d679090a04d679090b04d679090c04d679090d04d67909"
    "0fff01000100002d000201010000001a00180000156368726f6d69756d2e6578"
    "616d706c652e7465737400230000003304ef04ed3a3a00010011ec04c030f964"
    "fa0cb1bda6ba6880c70cdb26519cb39672392826826bd61efaf2b1dea6607905"
    "0e3a1508cee298e609074491845d7bc92cdb8beef713dea21d482c5cd9d94445"
    "f86fdf75059e7c994da5534b95b25713c0b480968c524fcbcca34961531c4529"
    "cc5ca798f008f4e642a9c64d42800d1e3c2ccd526586a00012877dd0ab5066a7"
    "78c1483ac1c624e5299ca8a72b1477a25838b81385b8510363d873c5ec580df5"
    "f21eb8aa73c55ca931a891250b797bf445be533111050835b602078937033b83"
    "28556c1d82653566c99ba17d0a18593cf08b8d3c66137a83b685cd4bf669e16b"
    "0e30dc7893574db2f1adbea626450b0a9d627c180275b78519dbe4bf28852bc5"
    "bb11d47b0feb7a58e3cb63fd396f0b5b22fa97beb453500322a7db4a6d367125"
    "fb59b76fa42be412af3e7ab0de81308dd432f9d25c2e682286d10e883cadb1f0"
    "1e737c1ee31c3376338feeda9640bc64b80827022245cbf247b3b424e1f94732"
    "233805f01c7dbcca02bb0cc510b24f693c78a53d8d47a2b4855dadbbc766e26d"
    "8727b79d073d5ea67a5c0111d1005489315e5f1987ae707b44b54c715ab57f12"
    "9c0b354797b1485d475516e21f52549e9c50998c35977db699455998c165c051"
    "785c034a64d0c653bfc6cb16a6ba6ba08fb8ca051a747a85db88af62a10cd1c5"
    "7f0b5e8dd2a1afd426be670652060cef16cb8c623920d1c05a717ba7541479b3"
    "7fd5481a64a365bbbb9afa3859db60104c1ab036fa03ddf4abc6314aacd519b9"
    "914685ac9b3e2535d5e94e0a74c68b00b1f751ab631b5222b8c1a4803f4fb332"
    "22bc47b0590581cc5cd0180d59381a3b74c48d571ba199b1b7d6928e793e396b"
    "c1d9c047527a44cf8507b3673dee0503e41365adb4ad2f47421809ab78784ca8"
    "98a37e408c95101aeb55a076a42f3d7946b511845e89a619069ff51a982734bd"
    "ed6106bd9c530418c210d98970c826f13a423d45b962a85da9647e56c465029a"
    "a22f20b3a4ec3e962a3c574729df61917f398e95c82b7fd447b9dca60b374798"
    "f2040b21267b0887348a2a1459903f7b758f39cca9529d1d33a7301cb49b7377"
    "2e87141e589f7ce768ee4261130a090ff56177723c1e487f074a678dd885a249"
    "1e86d9ad0c1b37fbca7ba170711ff3264b8186e5739ea2f5b84f546b2404cad8"
    "712fc4da55b1214fb4d6bdb77209cbe5cb28d494e2106ce21b5ecfe06c26f033"
    "4df278aa19b57c4893c1a0a7b3035d93646ec6d4373793bdd2698f817912d6d0"
    "0a007456642cc67b21438b0c022119a249b29c05738a0ecbb40dfcc7b12a5429"
    "5ab03e665e1e5bc3c8b630fc0b58cf3941c7838fb1605ec4b56f4fa5919b03b2"
    "0d594230c99abb45aeef5495fd8716d024042958227af41de9a6cae82b5b7872"
    "6d2e96177ad9b8a2a41954eb4f4cb424bad88ee0f377fcd98d61541108a86d77"
    "682027372cdb03709b351ae52b8a2001b13f0b109b7b813959afe965098b9078"
    "d11317fd9072af6449e7556a29faa672bc2544188b535b714974465f12b9c2e7"
    "9c552cce06b1a21157689b31897ea854f83b0d6400b25a4a29d3946866fca6d4"
    "d0add3938da01b4020eb6b51944ce97a66b81957f7c9b7fa98a95c7bbdedc109"
    "48411374be01a4309a7fd0115d77daab359957734337972c144f4d4920753870"
    "b48ea5443898ea384f9eeced269dac4ecd5de286a4ed207d1b72b54c73001d00"
    "2020bfe57d2a655ea1805d04eb8353eed9fb54c587f7f1cf7d8f876e5d3358bb"
    "7c001b0003020002fe0d00da0000010001f90020f57a87653c42f74b252f8255"
    "9600db81238c380a015b54c0418c1744a89d611700b0f90e5d1070c224256f80"
    "b81915855412e88396ca5b8661e9bb9bf9b47eb1a28b147dc2183dba7b87a185"
    "6ac78666fae07c75f796e7ccf8440eb2d98aa7c73dd7fe992e80a4212fd82372"
    "7767c9114215b6f42d887c2d00d58b28a0b2f8c2d3574cfed104ffb49eaa1bf2"
    "005004be44dad3879304d8abb69e592acadca0d71f7ecb1938b0e7e29faaa79f"
    "88ef4a70911af28e96eab02d1b2133bc5b09acd0055a0cf89d2e881f1eb6ea29"
    "fde789ea5019000d001a00187a7a090409050906040308040401050308050501"
    "08060601002b0007060a0a030403030005000501000000000010000e000c0268"
    "3208687474702f312e31000b0002010000170000000a000c000a3a3a11ec001d"
    "001700184a4a000100";

/* Chromium 156 headless, second connection: extensions permuted */
static const char hex_chromium2[] =
    "16030107e4010007e003034f0e068625a7d3d652916534d3eef82f5d07b036a6"
    "03538c36b143e2369d05122043afe8adf89bdd938da674cd9255da0b51f8cd82"
    "546b44915a2d68173e3c6c3a0020eaea130113021303c02bc02fc02cc030cca9"
    "cca8c013c014009c009d002f0035010007779a9a0000ca3400ba00b80582df13"
    "02010582df1302060582df13020d0582df13020e0582df13020f0582df130212"
    "0582df1302130582df13021408839a648c9b2d010708839a648c9b2d01080883"
    "9a648c9b2d010908839a648c9b2d010a08839a648c9b2d010b08839a648c9b2d"
    "010c08839a648c9b2d010d08839a648c9b2d011208839a648c9b2d011304d679"
    "090104d679090404d679090504d679090604d679090704d679090804d679090a"
    "04d679090b04d679090c04d679090d04d679090f00170000000b000201000000"
    "001a00180000156368726f6d69756d2e6578616d706c652e74657374003304ef"
    "04ed6a6a00010011ec04c02279a28e2b0a7f88c59c279a626751211630f5276f"
    "45e9cfddf33e98a62376267fec85b0485c8383bb07a5329f50c813e848bf2391"
    "351c5b72c940bc5b1c5abf327cdf5cb76ae922488c7e0960ba9c749a99b3c417"
    "fa0a33a6644c48c222db95a41029fdb56661607b1ec3c3ec489638037db4f194"
    "29ca05b0a15dfc689e71c839ae05bad45673c5d1c79eecc6f3c12d85d58e0586"
    "54294a347823ad37080df68b179222982b290924e3365b9251e831029f042d30"
    "8184459195fc491a3f634677c6340b87c7cee11906089bafec765523201a887a"
    "53575e730c6ea8507af17647fa909370ac5b4f50125b3a9374b92541d4ac6c64"
    "2c4f88aec8260dd27329bf2859f5bc1084539d58e85e4a613e4dc981795ba2c5"
    "e495e28837d1884b087844b89752800a518976940709b79b6952b7449715e277"
    "92987d0c578b463a7bef6b673f919217076188c341191c965db5c7c3c55d8cea"
    "83f1d528ef31c81f59a385d46956a44990dc2fd18cc5514b0fd203bdb56bbd4f"
    "c25e80f6908b468223e7be75999138a280fae45c3cc7acb1750ec5b987b1ac8a"
    "30e82769068854852f02d3ca315300e90c6b4f2457291634e1a1afb0a46c2134"
    "6f98658743a92c03c881c0225810ec4304b3a85321c2a8c94e9c635bd5fab941"
    "772d5515ae72a31c7a0aa3ac78395a239393021bdba49084d7aae9d2bd299a35"
    "65250fcfba0728606e805b2b739b551e1c7d149ccc1f64a8fdd72e633a5658b2"
    "70d94945fbe85952cbb0d192a24ef1bc5c6cae0930c282546176819c3b9b995a"
    "d7989a77715e37182b72702f96541ae213433b388306bfac923bd6ea2eb6e472"
    "b46558a9a0c0b7137f83a565960396f44a1759821ea9900572973942da17e492"
    "ab74caaf11837ae1bcc730e879cd891fb9490166c32b864479f7c7a64b6b1a99"
    "d08a3cb77ba23b73c06210f3eb883ea7b346f005242a433237ce949936191979"
    "c4c2cf5582aeebd9431cd03d55d8382738652c6a43793b823c916d4a0c4eebf9"
    "0207b7611781574b219f571c561cd386d2bab831e11a51060cf70ab6af9b68d7"
    "e1500df3933fac76a7180b1fd49d0d097615a8403005488b765e871647682a66"
    "0215052c9a3a6ef45ecd80984f0969617b4f6a4043e9102f97eb5838d64e5736"
    "470b0433e0637a9ed31e05c693820a6dfdd80f08e7cff046bf7a71804f079773"
    "13605d01450e958893e198ee652986ca3124b2467150137bf956b1a09c912320"
    "882838d31bc06edca604ec3532eabfd4488d904a4835a84d6f359a03e99f4ca3"
    "960ae6cc69965c73e172609592d34b20f3842e9ed6827f44a7a5883f4dfc3fae"
    "955406b23eefe318a122124909609e6ba199d4c0a506aa38eb6790585501743d"
    "af128415971802312b8f1955cc411c99f19737f86c83c7c9a43863ea08aa03a9"
    "ab5f0b641648235ca2aa0f96b7539c708f3aa5927a9d0e910f411735ccfa2edd"
    "d508e6c4933fc951c92503405518f9694069bb9a69c41bd2a8cf0eb8cf43f576"
    "c4f57d2fb5be2d743c3e24320f431f7df28833878435ca96a8c291ee1471d986"
    "c19e63c36c928d64b95a62b41f92270195b7063c0b54b61635d21ccf8d33895e"
    "fc65b8699a65c48ddb2a04516042f2da0ad48498cecf8d8ddfebc5e2962c79d4"
    "4aea358c243bc726bdcd01e9fb10e5907176b9187b5f103ab10c220da4a085dd"
    "84a05cfeca4d823ce67679001d002091e6f7f410724908ca1139f9aaf536bdf3"
    "b95071bd51be6323d2e4c0111d8669ff01000100000a000c000a6a6a11ec001d"
    "00170018000d001a00188a8a0904090509060403080404010503080505010806"
    "0601fe0d011a00000100011b0020a83370edc32c4a43a7f91018a4ea54cf7fc0"
    "8ef369e7d0b2f6b40e6290c8610d00f04fa3622c6ff0a503f8a089da1afa6c73"
    "6cfe2be3551bc46a1bf62598f904395574c5d1025791dd659c04d59363be7439"
    "9e078866838b5035b078e25f726f9ce9470b59172e33a74e520c0888d3d6b936"
    "be24f3fadcc1b15c6e00592c01d6564865cf8f6853a20a5821a85bd595f164fb"
    "107b90a05f8b9a89da8a6f4332206d082d376fa96fa9f389814729daaf13f211"
    "bc183f8418d4932b3fd9654de0c8932ef4e08abdb7674dc7a951bcb6ce73f651"
    "be437b575b4fe5873c41e434b5781ab9467ce667dca5566f5121d2b84039b46b"
    "72791ffbd1aa0d21a6be785f982e06f96fe1ebdee0100b77a8332aec8d9cde1c"
    "002b000706fafa0304030344cd0005000302683200120000002d000201010005"
    "00050100000000001b00030200020010000e000c02683208687474702f312e31"
    "002300005a5a000100";

/* Python 3.11 ssl (OpenSSL 3.0.19), MemoryBIO, ALPN h2/http1.1 */
static const char hex_python13[] =
    "1603010200010001fc03035f137c9028fd3fe80794464dcbf46102b3f46f26eb"
    "d3b0ed3d69a561a73d2c5d20b628f0f6d6bd567997afeed10fdc0b40cc305a53"
    "ce68b12dc54fbeac29ad44f30024130213031301c02cc030c02bc02fcca9cca8"
    "c024c028c023c027009f009e006b006700ff0100018f00000018001600001370"
    "7974686f6e2e6578616d706c652e74657374000b000403000102000a00160014"
    "001d0017001e0019001801000101010201030104002300000010000e000c0268"
    "3208687474702f312e310016000000170000000d002a00280403050306030807"
    "08080809080a080b080408050806040105010601030303010302040205020602"
    "002b00050403040303002d00020101003300260024001d00207851d3b8248cf9"
    "7d2fbbe53fb4e0fd40e1ed742a1540cf7ad0237ab0ebbda344001500c8000000"
    "0000000000000000000000000000000000000000000000000000000000000000"
    "0000000000000000000000000000000000000000000000000000000000000000"
    "0000000000000000000000000000000000000000000000000000000000000000"
    "0000000000000000000000000000000000000000000000000000000000000000"
    "0000000000000000000000000000000000000000000000000000000000000000"
    "0000000000000000000000000000000000000000000000000000000000000000"
    "0000000000";

/* Python 3.11 ssl, maximum_version TLS 1.2 */
static const char hex_python12[] =
    "16030100b7010000b303038fff24887ab2a4122c7f727b76c4d980e4d378e1c3"
    "131669c3e4da122864347100001ec02cc030c02bc02fcca9cca8c024c028c023"
    "c027009f009e006b006700ff0100006c000000160014000011707931322e6578"
    "616d706c652e74657374000b000403000102000a000c000a001d0017001e0019"
    "0018002300000016000000170000000d002a0028040305030603080708080809"
    "080a080b080408050806040105010601030303010302040205020602";

/* Python 3.11 ssl, a 255-byte server name (4 labels of 63) */
static const char hex_python_long[] =
    "160301020e0100020a030382fff2d6b14c317eb02b29014b459ef043fc43e404"
    "54dc6ba314db6ebda2e1a620d60041dfa7ad80cb94403daf9fa5aa196a89a1b9"
    "26effbc8feb4466c016b3c800024130213031301c02cc030c02bc02fcca9cca8"
    "c024c028c023c027009f009e006b006700ff0100019d0000010401020000ff61"
    "6161616161616161616161616161616161616161616161616161616161616161"
    "6161616161616161616161616161616161616161616161616161616161612e62"
    "6262626262626262626262626262626262626262626262626262626262626262"
    "6262626262626262626262626262626262626262626262626262626262622e63"
    "6363636363636363636363636363636363636363636363636363636363636363"
    "6363636363636363636363636363636363636363636363636363636363632e64"
    "6464646464646464646464646464646464646464646464646464646464646464"
    "646464646464646464646464646464646464646464646464646464646464000b"
    "000403000102000a00160014001d0017001e0019001801000101010201030104"
    "002300000016000000170000000d002a0028040305030603080708080809080a"
    "080b080408050806040105010601030303010302040205020602002b00050403"
    "040303002d00020101003300260024001d0020a66c50b42048a4f138c9225bbc"
    "83c103a13f13194b68ae14609eae215de07227";

/* mbedTLS 2.28.3 client (TLS 1.2), ALPN h2/http1.1 */
static const char hex_mbedtls[] =
    "16030101440100014003036b12cf5d59b0898f4910c746ebfcaa5ebc7acd20a6"
    "e48b18b3b00a08892ca97f0000a0cca8cca9ccaac02cc030009fc0adc09fc024"
    "c028006bc00ac0140039c0afc0a3c087c08bc07dc073c07700c40088c02bc02f"
    "009ec0acc09ec023c0270067c009c0130033c0aec0a2c086c08ac07cc072c076"
    "00be0045009dc09d003d0035c032c02ac00fc02ec026c005c0a1c07b00c00084"
    "c08dc079c089c075009cc09c003c002fc031c029c00ec02dc025c004c0a0c07a"
    "00ba0041c08cc078c088c07400ff010000770000001900170000146d62656474"
    "6c732e6578616d706c652e74657374000d001200100603060105030501040304"
    "0103030301000a001c001a0019001c0018001b00170016001a00150014001300"
    "12001d001e000b0002010000160000001700000010000e000c02683208687474"
    "702f312e3100230000";

struct vector {
	const char	*name;
	const char	*hex;
	const char	*sni;		/* NULL: no server_name */
	bool		 alpn;
	size_t		 records;
};

static const struct vector vectors[] = {
	{ "openssl_tls13", hex_openssl_tls13, "tls13.example.test", false, 1 },
	{ "openssl_tls12", hex_openssl_tls12, "tls12.example.test", false, 1 },
	{ "openssl_nosni", hex_openssl_nosni, NULL, false, 1 },
	{ "openssl_alpn", hex_openssl_alpn, "alpn.example.test", true, 1 },
	{ "openssl_frag", hex_openssl_frag, "frag.example.test", true, 2 },
	{ "curl", hex_curl, "curl.example.test", true, 1 },
	{ "wget", hex_wget, "localhost", false, 1 },
	{ "chromium1", hex_chromium1, "chromium.example.test", true, 1 },
	{ "chromium2", hex_chromium2, "chromium.example.test", true, 1 },
	{ "python13", hex_python13, "python.example.test", true, 1 },
	{ "python12", hex_python12, "py12.example.test", false, 1 },
	{ "python_long", hex_python_long,
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa."
	    "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb."
	    "ccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc."
	    "ddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd",
	    false, 1 },
	{ "mbedtls", hex_mbedtls, "mbedtls.example.test", true, 1 },
};
#define NVECTORS (sizeof(vectors) / sizeof(vectors[0]))

/* What may follow a ClientHello on the wire: a TLS 1.3 middlebox-compat
 * change_cipher_spec, early data, then anything. */
static const uint8_t trailer[] = { 0x14, 0x03, 0x03, 0x00, 0x01, 0x01,
    0x17, 0x03, 0x03, 0x00, 0x03, 0xaa, 0xbb, 0xcc, 'G', 'E', 'T', ' ', 0 };

#define BUF_MAX (CLIENTHELLO_READ_MAX + 256)

struct buf {
	uint8_t		 b[BUF_MAX];
	size_t		 n;
};

static void
put(struct buf *b, const void *p, size_t n)
{
	assert_true(b->n + n <= sizeof(b->b));
	if (n > 0)
		memcpy(b->b + b->n, p, n);
	b->n += n;
}

static void
put8(struct buf *b, unsigned int v)
{
	uint8_t	 c = (uint8_t)v;

	put(b, &c, 1);
}

static void
put16(struct buf *b, unsigned int v)
{
	put8(b, v >> 8);
	put8(b, v);
}

static void
put24(struct buf *b, unsigned int v)
{
	put8(b, v >> 16);
	put16(b, v);
}

static void
fill(struct buf *b, int c, size_t n)
{
	assert_true(b->n + n <= sizeof(b->b));
	memset(b->b + b->n, c, n);
	b->n += n;
}

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	fail_msg("bad hex digit %c", c);
	return -1;
}

static void
unhex(const char *hex, struct buf *b)
{
	size_t	 n = strlen(hex);

	assert_int_equal(n % 2, 0);
	b->n = 0;
	for (size_t i = 0; i < n; i += 2)
		put8(b, (unsigned int)(hexval(hex[i]) << 4 | hexval(hex[i + 1])));
}

/* The handshake bytes carried by the records of a stream (lenient). */
static void
defrag(const struct buf *in, struct buf *msg)
{
	size_t	 p = 0, l;

	msg->n = 0;
	while (p + 5 <= in->n) {
		assert_int_equal(in->b[p], 22);
		l = (size_t)in->b[p + 3] << 8 | in->b[p + 4];
		assert_true(p + 5 + l <= in->n);
		put(msg, in->b + p + 5, l);
		p += 5 + l;
	}
	assert_int_equal(p, in->n);
}

/*
 * Frame a handshake message into max(nsizes, 1) records: the first ones of
 * sizes[i] bytes, the last with what is left.
 */
static void
frame(const uint8_t *msg, size_t n, const size_t *sizes, size_t nsizes,
    struct buf *out)
{
	size_t	 p = 0, k;

	out->n = 0;
	for (size_t i = 0;; i++) {
		k = i + 1 < nsizes ? sizes[i] : n - p;
		assert_true(k <= n - p);
		put8(out, 22);
		put16(out, i == 0 ? 0x0301 : 0x0303);
		put16(out, (unsigned int)k);
		put(out, msg + p, k);
		p += k;
		if (i + 1 >= nsizes)
			break;
	}
}

static void
frame1(const struct buf *msg, struct buf *out)
{
	frame(msg->b, msg->n, NULL, 0, out);
}

static bool
all_zero(const struct clienthello *ch)
{
	static const struct clienthello	 zero;

	return memcmp(ch, &zero, sizeof(zero)) == 0;
}

/* Peek at exactly len bytes of a heap copy: ASan sees a read past them. */
static enum hello_result
peek(const uint8_t *bytes, size_t len, struct clienthello *ch, const char **why)
{
	uint8_t			*copy = malloc(len ? len : 1);
	enum hello_result	 r;

	assert_non_null(copy);
	memcpy(copy, bytes, len);
	memset(ch, 0xa5, sizeof(*ch));
	*why = NULL;
	r = clienthello_peek(copy, len, ch, why);
	assert_non_null(*why);
	assert_memory_equal(copy, bytes, len);
	free(copy);
	return r;
}

/*
 * s[0..n) is a whole ClientHello: every strict prefix is INCOMPLETE, the
 * whole is OK with the given SNI and ALPN flag and spans n bytes, and so it
 * stays with bytes behind it.
 */
static void
check_ok(const uint8_t *s, size_t n, const char *sni, bool alpn)
{
	struct clienthello	 ch, again;
	const char		*why;
	uint8_t			*buf;

	for (size_t k = 0; k < n; k++) {
		assert_int_equal(peek(s, k, &ch, &why), HELLO_INCOMPLETE);
		assert_string_equal(why, "truncated");
		assert_true(all_zero(&ch));
	}
	assert_int_equal(peek(s, n, &ch, &why), HELLO_OK);
	assert_int_equal(ch.bytes, n);
	assert_int_equal(ch.has_alpn, alpn);
	assert_int_equal(ch.legacy_version, 0x0303);
	if (sni != NULL) {
		assert_true(ch.has_sni);
		assert_string_equal(ch.sni, sni);
		assert_string_equal(why, "ClientHello with SNI");
	} else {
		assert_false(ch.has_sni);
		assert_string_equal(ch.sni, "");
		assert_string_equal(why, "ClientHello without SNI");
	}

	assert_non_null(buf = malloc(n + sizeof(trailer)));
	memcpy(buf, s, n);
	memcpy(buf + n, trailer, sizeof(trailer));
	for (size_t extra = 1; extra <= sizeof(trailer); extra++) {
		const char	*why2;

		assert_int_equal(peek(buf, n + extra, &again, &why2), HELLO_OK);
		assert_memory_equal(&again, &ch, sizeof(ch));
		assert_string_equal(why2, why);
	}
	free(buf);
}

/*
 * s[0..n) is refused (want: NOT_TLS or BAD, for want_why), decided by the
 * byte at offset `at`: shorter prefixes are INCOMPLETE, from at + 1 bytes
 * on, with the trailer behind too, the verdict holds and *out stays zero.
 */
static void
check_bad_at(const uint8_t *s, size_t n, size_t at, enum hello_result want,
    const char *want_why)
{
	struct clienthello	 ch;
	const char		*why;
	uint8_t			*buf;

	assert_true(at < n);
	for (size_t k = 0; k <= at; k++)
		if (peek(s, k, &ch, &why) != HELLO_INCOMPLETE)
			fail_msg("prefix %zu of %zu: %s, want truncated to %zu "
			    "then %s", k, n, why, at, want_why);
	assert_non_null(buf = malloc(n + sizeof(trailer)));
	memcpy(buf, s, n);
	memcpy(buf + n, trailer, sizeof(trailer));
	for (size_t k = at + 1; k <= n + sizeof(trailer); k++) {
		if (peek(buf, k, &ch, &why) != want ||
		    strcmp(why, want_why) != 0)
			fail_msg("prefix %zu of %zu (decided at %zu): %s, want %s",
			    k, n, at, why, want_why);
		assert_true(all_zero(&ch));
	}
	free(buf);
}

/* ---- A synthetic ClientHello, laid out at fixed offsets ---- */

#define OFF_HS		5	/* message type */
#define OFF_HSLEN	6
#define OFF_VERSION	9
#define OFF_SIDLEN	43
#define OFF_CSLEN	76	/* after a 32-byte session_id */
#define OFF_CMLEN	82	/* after two suites */
#define OFF_EXTLEN	84	/* after one method */
#define OFF_EXTS	86

/* Body: version 0x0303, random, 32-byte session_id, two suites, null
 * compression, then exts (extensions block contents) unless !with_exts. */
static void
hello_msg(const struct buf *exts, bool with_exts, struct buf *msg)
{
	size_t	 body = 2 + 32 + 1 + 32 + 2 + 4 + 1 + 1 +
		    (with_exts ? 2 + exts->n : 0);

	msg->n = 0;
	put8(msg, 1);
	put24(msg, (unsigned int)body);
	put16(msg, 0x0303);
	fill(msg, 0x11, 32);
	put8(msg, 32);
	fill(msg, 0x22, 32);
	put16(msg, 4);
	put16(msg, 0x1301);
	put16(msg, 0x1302);
	put8(msg, 1);
	put8(msg, 0);
	if (with_exts) {
		put16(msg, (unsigned int)exts->n);
		put(msg, exts->b, exts->n);
	}
}

/* One record around hello_msg(). */
static void
hello(const struct buf *exts, struct buf *out)
{
	static struct buf	 msg;

	hello_msg(exts, true, &msg);
	frame1(&msg, out);
}

static void
ext(struct buf *exts, unsigned int type, const void *data, size_t n)
{
	put16(exts, type);
	put16(exts, (unsigned int)n);
	put(exts, data, n);
}

/* A server_name extension with one host_name of n bytes. */
static void
ext_sni(struct buf *exts, const char *name, size_t n)
{
	put16(exts, 0);
	put16(exts, (unsigned int)(n + 5));
	put16(exts, (unsigned int)(n + 3));
	put8(exts, 0);
	put16(exts, (unsigned int)n);
	put(exts, name, n);
}

/* supported_versions (TLS 1.3) and ALPN h2, around a server_name. */
static void
typical_exts(struct buf *exts, const char *sni)
{
	static const uint8_t	 sv[] = { 2, 0x03, 0x04 };
	static const uint8_t	 alpn[] = { 0, 3, 2, 'h', '2' };

	exts->n = 0;
	ext(exts, 0x002b, sv, sizeof(sv));
	if (sni != NULL)
		ext_sni(exts, sni, strlen(sni));
	ext(exts, 0x0010, alpn, sizeof(alpn));
}

static struct buf	 gb, gm, gx;	/* big scratch buffers, off the stack */

/* ---- Tests ---- */

/* Every real client's hello, as captured. */
static void
test_real(void **state)
{
	for (size_t i = 0; i < NVECTORS; i++) {
		const struct vector	*v = &vectors[i];
		size_t			 p = 0, records = 0;

		print_message("# vector %s\n", v->name);
		unhex(v->hex, &gb);
		for (; p < gb.n; records++)
			p += 5 + ((size_t)gb.b[p + 3] << 8 | gb.b[p + 4]);
		assert_int_equal(records, v->records);
		check_ok(gb.b, gb.n, v->sni, v->alpn);
	}
}

/* Real hellos split into 2 and 3 records anywhere, the message header too. */
static void
test_real_refragmented(void **state)
{
	struct clienthello	 ch;
	const char		*why;

	for (size_t i = 0; i < NVECTORS; i++) {
		const struct vector	*v = &vectors[i];

		unhex(v->hex, &gb);
		defrag(&gb, &gm);
		/* at every split point, the whole is OK with the same name */
		for (size_t at = 1; at < gm.n; at++) {
			size_t	 sizes[2] = { at, 0 };

			frame(gm.b, gm.n, sizes, 2, &gb);
			assert_int_equal(gb.n, gm.n + 10);
			assert_int_equal(peek(gb.b, gb.n, &ch, &why), HELLO_OK);
			assert_string_equal(ch.sni, v->sni ? v->sni : "");
			assert_int_equal(ch.bytes, gb.n);
		}
		/* and a few, every prefix */
		{
			size_t	 s3[][3] = { { 1, 1, 0 }, { 2, 3, 0 },
			    { 4, 100, 0 }, { 5, 1, 0 }, { gm.n / 3, gm.n / 3, 0 },
			    { 40, gm.n - 41, 0 } };

			for (size_t k = 0; k < sizeof(s3) / sizeof(s3[0]); k++) {
				frame(gm.b, gm.n, s3[k], 3, &gb);
				assert_int_equal(gb.n, gm.n + 15);
				check_ok(gb.b, gb.n, v->sni, v->alpn);
			}
		}
	}
}

/* The real hello of a client without a server name: OK, no SNI. */
static void
test_no_sni(void **state)
{
	struct clienthello	 ch;
	const char		*why;

	unhex(hex_openssl_nosni, &gb);
	assert_int_equal(peek(gb.b, gb.n, &ch, &why), HELLO_OK);
	assert_false(ch.has_sni);
	assert_string_equal(ch.sni, "");
	assert_string_equal(why, "ClientHello without SNI");

	/* synthetic: extensions without server_name, an empty block, none */
	typical_exts(&gx, NULL);
	hello(&gx, &gb);
	check_ok(gb.b, gb.n, NULL, true);
	gx.n = 0;
	hello(&gx, &gb);
	check_ok(gb.b, gb.n, NULL, false);
	hello_msg(&gx, false, &gm);
	frame1(&gm, &gb);
	check_ok(gb.b, gb.n, NULL, false);
}

static void
test_synthetic_ok(void **state)
{
	struct clienthello	 ch;
	const char		*why;

	typical_exts(&gx, "Example.COM");
	hello(&gx, &gb);
	check_ok(gb.b, gb.n, "Example.COM", true);	/* as received */
	assert_int_equal(peek(gb.b, gb.n, &ch, &why), HELLO_OK);
	assert_int_equal(ch.legacy_version, 0x0303);

	/* a NULL why is allowed */
	assert_int_equal(clienthello_peek(gb.b, gb.n, &ch, NULL), HELLO_OK);
	assert_int_equal(clienthello_peek(gb.b, 3, &ch, NULL),
	    HELLO_INCOMPLETE);
	assert_int_equal(clienthello_peek((const uint8_t *)"G", 1, &ch, NULL),
	    HELLO_NOT_TLS);
}

/* Plaintext and other protocols are told on their first byte or two. */
static void
test_not_tls(void **state)
{
	static const char	*plain[] = { "GET / HTTP/1.1\r\n\r\n",
	    "PROXY TCP4 192.0.2.1 192.0.2.2 1 443\r\n",
	    "\r\n\r\n\0\r\nQUIT\n", "SSH-2.0-x\r\n" };
	/* SSLv2-compatible hello, alert, change_cipher_spec, application
	 * data, heartbeat: a client starts with a handshake record */
	static const uint8_t	 other[][6] = {
	    { 0x80, 0x2e, 0x01, 0x03, 0x01, 0x00 },
	    { 0x15, 0x03, 0x03, 0x00, 0x02, 0x02 },
	    { 0x14, 0x03, 0x03, 0x00, 0x01, 0x01 },
	    { 0x17, 0x03, 0x03, 0x00, 0x01, 0x00 },
	    { 0x18, 0x03, 0x03, 0x00, 0x01, 0x00 },
	    { 0x00, 0x00, 0x00, 0x00, 0x00, 0x00 } };
	static const uint8_t	 h_not3[] = { 0x16, 0x02, 0x00, 0x00, 0x01, 1 };
	static const uint8_t	 h_ascii[] = { 0x16, 'G', 'E', 'T', ' ', '/' };

	for (size_t i = 0; i < sizeof(plain) / sizeof(plain[0]); i++)
		check_bad_at((const uint8_t *)plain[i], strlen(plain[i]) + 1, 0,
		    HELLO_NOT_TLS, "not TLS");
	for (size_t i = 0; i < sizeof(other) / sizeof(other[0]); i++)
		check_bad_at(other[i], sizeof(other[i]), 0, HELLO_NOT_TLS,
		    "not TLS");
	check_bad_at(h_not3, sizeof(h_not3), 1, HELLO_NOT_TLS, "not TLS");
	check_bad_at(h_ascii, sizeof(h_ascii), 1, HELLO_NOT_TLS, "not TLS");
}

static void
test_record_header(void **state)
{
	typical_exts(&gx, "a.example");
	hello(&gx, &gb);

	/* record versions 0x0301..0x0303 */
	for (unsigned int minor = 0; minor < 256; minor++) {
		gb.b[2] = (uint8_t)minor;
		if (minor >= 1 && minor <= 3)
			check_ok(gb.b, gb.n, "a.example", true);
		else
			check_bad_at(gb.b, gb.n, 2, HELLO_BAD,
			    "bad record version");
	}
	gb.b[2] = 3;

	/* length 0, and past 2^14 (told by its first byte when it can be) */
	gb.b[3] = 0;
	gb.b[4] = 0;
	check_bad_at(gb.b, gb.n, 4, HELLO_BAD, "empty record");
	gb.b[3] = 0x40;
	gb.b[4] = 0x01;
	check_bad_at(gb.b, gb.n, 4, HELLO_BAD, "record oversize");
	gb.b[3] = 0x41;
	check_bad_at(gb.b, gb.n, 3, HELLO_BAD, "record oversize");
	gb.b[3] = 0xff;
	check_bad_at(gb.b, gb.n, 3, HELLO_BAD, "record oversize");
}

/* The handshake message: type, length, the record around it. */
static void
test_message_header(void **state)
{
	typical_exts(&gx, "a.example");
	hello(&gx, &gb);

	for (unsigned int t = 0; t < 256; t++) {
		if (t == 1)
			continue;
		gb.b[OFF_HS] = (uint8_t)t;
		check_bad_at(gb.b, gb.n, OFF_HS, HELLO_BAD, "not a ClientHello");
	}
	gb.b[OFF_HS] = 1;

	/* a length beyond CLIENTHELLO_MAX, told by its first byte */
	gb.b[OFF_HSLEN] = 0x01;
	check_bad_at(gb.b, gb.n, OFF_HSLEN, HELLO_BAD, "ClientHello oversize");
	gb.b[OFF_HSLEN] = 0x00;
	gb.b[OFF_HSLEN + 1] = 0x40;
	check_bad_at(gb.b, gb.n, OFF_HSLEN + 1, HELLO_BAD,
	    "ClientHello oversize");
	/* shorter than the record: the record would run past the message */
	gb.b[OFF_HSLEN + 1] = 0x00;
	gb.b[OFF_HSLEN + 2]--;
	check_bad_at(gb.b, gb.n, OFF_HSLEN + 2, HELLO_BAD,
	    "data after ClientHello");
	gb.b[OFF_HSLEN + 2]++;
	check_ok(gb.b, gb.n, "a.example", true);
	/* shorter than any ClientHello */
	gb.b[3] = 0;
	gb.b[4] = 4 + 40;
	gb.b[OFF_HSLEN + 2] = 40;
	check_bad_at(gb.b, 5 + 44, OFF_HSLEN + 2, HELLO_BAD,
	    "ClientHello too short");
}

/* Bytes after the ClientHello inside its last record. */
static void
test_data_after(void **state)
{
	typical_exts(&gx, "a.example");
	hello_msg(&gx, true, &gm);
	put8(&gm, 0x0b);	/* a stray byte of another message */
	frame1(&gm, &gb);
	/* decided at the length's last byte: the record is one byte longer */
	check_bad_at(gb.b, gb.n, OFF_HSLEN + 2, HELLO_BAD,
	    "data after ClientHello");

	/* the same in the second record: its length is too long */
	{
		size_t	 sizes[2] = { 100, 0 };

		frame(gm.b, gm.n, sizes, 2, &gb);
		check_bad_at(gb.b, gb.n, 5 + 100 + 4, HELLO_BAD,
		    "data after ClientHello");
	}
}

/* Records of other types inside a fragmented ClientHello. */
static void
test_interleaved(void **state)
{
	size_t	 sizes[2] = { 50, 0 };

	typical_exts(&gx, "a.example");
	hello_msg(&gx, true, &gm);
	frame(gm.b, gm.n, sizes, 2, &gb);
	check_ok(gb.b, gb.n, "a.example", true);
	for (unsigned int t = 0; t < 256; t++) {
		if (t == 22)
			continue;
		gb.b[55] = (uint8_t)t;
		check_bad_at(gb.b, gb.n, 55, HELLO_BAD, "record not handshake");
	}
	gb.b[55] = 22;
	gb.b[56] = 2;
	check_bad_at(gb.b, gb.n, 56, HELLO_BAD, "bad record version");
	gb.b[56] = 3;
	gb.b[57] = 4;
	check_bad_at(gb.b, gb.n, 57, HELLO_BAD, "bad record version");
	gb.b[57] = 3;
	gb.b[58] = 0;
	gb.b[59] = 0;
	check_bad_at(gb.b, gb.n, 59, HELLO_BAD, "empty record");
}

/* At most CLIENTHELLO_RECORDS_MAX records. */
static void
test_many_records(void **state)
{
	size_t	 sizes[CLIENTHELLO_RECORDS_MAX + 1];
	size_t	 at;

	typical_exts(&gx, "many.example");
	hello_msg(&gx, true, &gm);
	assert_true(gm.n > CLIENTHELLO_RECORDS_MAX + 1);
	for (size_t i = 0; i <= CLIENTHELLO_RECORDS_MAX; i++)
		sizes[i] = 1;

	/* 63 one-byte records, the 64th with the rest: fine */
	frame(gm.b, gm.n, sizes, CLIENTHELLO_RECORDS_MAX, &gb);
	check_ok(gb.b, gb.n, "many.example", true);

	/* the 64th record must carry the rest: one byte short is refused at
	 * its length */
	frame(gm.b, gm.n, sizes, CLIENTHELLO_RECORDS_MAX + 1, &gb);
	at = 6 * (CLIENTHELLO_RECORDS_MAX - 1) + 4;
	check_bad_at(gb.b, gb.n, at, HELLO_BAD, "too many records");
}

/* The longest ClientHello, in the most records: CLIENTHELLO_READ_MAX bytes. */
static void
test_longest(void **state)
{
	struct clienthello	 ch;
	const char		*why;
	size_t			 pad, sizes[CLIENTHELLO_RECORDS_MAX];

	typical_exts(&gx, "big.example");
	hello_msg(&gx, true, &gm);
	pad = CLIENTHELLO_MAX - gm.n - 4;	/* a padding extension */
	put16(&gx, 0x0015);
	put16(&gx, (unsigned int)pad);
	fill(&gx, 0, pad);
	hello_msg(&gx, true, &gm);
	assert_int_equal(gm.n, CLIENTHELLO_MAX);

	/* one record of 2^14 */
	frame1(&gm, &gb);
	assert_int_equal(peek(gb.b, gb.n, &ch, &why), HELLO_OK);
	assert_string_equal(ch.sni, "big.example");
	assert_int_equal(ch.bytes, CLIENTHELLO_MAX + 5);

	/* 64 records */
	for (size_t i = 0; i < CLIENTHELLO_RECORDS_MAX; i++)
		sizes[i] = CLIENTHELLO_MAX / CLIENTHELLO_RECORDS_MAX;
	frame(gm.b, gm.n, sizes, CLIENTHELLO_RECORDS_MAX, &gb);
	assert_int_equal(gb.n, CLIENTHELLO_READ_MAX);
	check_ok(gb.b, gb.n, "big.example", true);

	/* one byte more is too many for a ClientHello (here: the length) */
	put16(&gx, 0x00ff);
	put16(&gx, 0);
	hello_msg(&gx, true, &gm);
	assert_int_equal(gm.n, CLIENTHELLO_MAX + 4);
	frame(gm.b, gm.n, sizes, 2, &gb);
	/* 0x00 0x40: 16384 or more, told by the middle byte */
	check_bad_at(gb.b, gb.n, OFF_HSLEN + 1, HELLO_BAD,
	    "ClientHello oversize");
}

static void
test_legacy_version(void **state)
{
	static const unsigned int ok[] = { 0x0301, 0x0302, 0x0303, 0x0304,
	    0x03ff };

	typical_exts(&gx, "v.example");
	hello(&gx, &gb);
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		struct clienthello	 ch;
		const char		*why;

		gb.b[OFF_VERSION] = (uint8_t)(ok[i] >> 8);
		gb.b[OFF_VERSION + 1] = (uint8_t)ok[i];
		assert_int_equal(peek(gb.b, gb.n, &ch, &why), HELLO_OK);
		assert_int_equal(ch.legacy_version, ok[i]);
	}
	gb.b[OFF_VERSION] = 3;
	gb.b[OFF_VERSION + 1] = 0;	/* SSL 3.0 */
	check_bad_at(gb.b, gb.n, OFF_VERSION + 1, HELLO_BAD,
	    "bad legacy_version");
	gb.b[OFF_VERSION] = 2;
	check_bad_at(gb.b, gb.n, OFF_VERSION, HELLO_BAD, "bad legacy_version");
	gb.b[OFF_VERSION] = 0xfe;	/* DTLS */
	check_bad_at(gb.b, gb.n, OFF_VERSION, HELLO_BAD, "bad legacy_version");
}

/* Vector lengths that run past what holds them, or break their rules. */
static void
test_lengths(void **state)
{
	typical_exts(&gx, "l.example");
	hello(&gx, &gb);
	check_ok(gb.b, gb.n, "l.example", true);

	gb.b[OFF_SIDLEN] = 33;
	check_bad_at(gb.b, gb.n, OFF_SIDLEN, HELLO_BAD,
	    "bad session_id length");
	gb.b[OFF_SIDLEN] = 32;

	gb.b[OFF_CSLEN + 1] = 3;	/* odd */
	check_bad_at(gb.b, gb.n, OFF_CSLEN + 1, HELLO_BAD,
	    "bad cipher_suites length");
	gb.b[OFF_CSLEN + 1] = 0;	/* none */
	check_bad_at(gb.b, gb.n, OFF_CSLEN + 1, HELLO_BAD,
	    "bad cipher_suites length");
	gb.b[OFF_CSLEN] = 1;		/* past the message, first byte */
	check_bad_at(gb.b, gb.n, OFF_CSLEN, HELLO_BAD,
	    "bad cipher_suites length");
	gb.b[OFF_CSLEN] = 0;
	gb.b[OFF_CSLEN + 1] = 4;

	gb.b[OFF_CMLEN] = 0;
	check_bad_at(gb.b, gb.n, OFF_CMLEN, HELLO_BAD,
	    "bad compression_methods length");
	gb.b[OFF_CMLEN] = 200;		/* past the message */
	check_bad_at(gb.b, gb.n, OFF_CMLEN, HELLO_BAD,
	    "bad compression_methods length");
	gb.b[OFF_CMLEN] = 1;

	gb.b[OFF_EXTLEN + 1]++;		/* the block must fill the message */
	check_bad_at(gb.b, gb.n, OFF_EXTLEN + 1, HELLO_BAD,
	    "bad extensions length");
	gb.b[OFF_EXTLEN + 1] -= 2;
	check_bad_at(gb.b, gb.n, OFF_EXTLEN + 1, HELLO_BAD,
	    "bad extensions length");
	gb.b[OFF_EXTLEN + 1]++;
	gb.b[OFF_EXTLEN] = 1;
	check_bad_at(gb.b, gb.n, OFF_EXTLEN, HELLO_BAD,
	    "bad extensions length");
	gb.b[OFF_EXTLEN] = 0;

	/* first extension (supported_versions, 3 bytes) overruns */
	gb.b[OFF_EXTS + 3] = 0xff;
	check_bad_at(gb.b, gb.n, OFF_EXTS + 3, HELLO_BAD,
	    "bad extension length");
	gb.b[OFF_EXTS + 2] = 1;
	gb.b[OFF_EXTS + 3] = 3;
	check_bad_at(gb.b, gb.n, OFF_EXTS + 2, HELLO_BAD,
	    "bad extension length");
	gb.b[OFF_EXTS + 2] = 0;
	check_ok(gb.b, gb.n, "l.example", true);
}

/* After compression_methods: nothing, an empty block, or extensions. */
static void
test_extensions_block(void **state)
{
	/* the message's tail after compression_methods is 1..5 bytes of
	 * something: only 0 and 2 can be (nothing, empty block) */
	for (size_t tail = 0; tail <= 6; tail++) {
		gx.n = 0;
		hello_msg(&gx, false, &gm);
		if (tail >= 2) {
			put16(&gm, (unsigned int)(tail - 2));
			fill(&gm, 0, tail - 2);
		} else
			fill(&gm, 0, tail);
		gm.b[3] = (uint8_t)(gm.n - 4);
		frame1(&gm, &gb);
		if (tail == 0 || tail == 2)
			check_ok(gb.b, gb.n, NULL, false);
		else if (tail == 6) {
			/* one empty extension of type 0x0000 is a
			 * server_name too short to hold a name */
			check_bad_at(gb.b, gb.n, OFF_EXTS + 1, HELLO_BAD,
			    "bad server_name length");
		} else
			check_bad_at(gb.b, gb.n, OFF_CMLEN, HELLO_BAD,
			    "bad compression_methods length");
	}
}

/* An extension must leave 0 or 4+ bytes of its block: no 1..3 to spare. */
static void
test_extension_leftover(void **state)
{
	for (size_t spare = 1; spare <= 4; spare++) {
		gx.n = 0;
		ext(&gx, 0x0017, NULL, 0);
		fill(&gx, 0, spare);
		hello(&gx, &gb);
		if (spare < 4)
			check_bad_at(gb.b, gb.n, OFF_EXTS + 3, HELLO_BAD,
			    "bad extension length");
		else	/* an empty extension of type 0: a short server_name */
			check_bad_at(gb.b, gb.n, OFF_EXTS + 5, HELLO_BAD,
			    "bad server_name length");
	}
}

static void
test_duplicate_extension(void **state)
{
	static const uint8_t	 v[] = { 0x00, 0x17 };

	typical_exts(&gx, "d.example");
	ext(&gx, 0x0017, NULL, 0);
	ext(&gx, 0x000a, v, sizeof(v));
	hello(&gx, &gb);
	check_ok(gb.b, gb.n, "d.example", true);

	typical_exts(&gx, "d.example");
	ext(&gx, 0x0017, NULL, 0);
	ext(&gx, 0x0017, NULL, 0);
	hello(&gx, &gb);
	check_bad_at(gb.b, gb.n, gb.n - 3, HELLO_BAD, "duplicate extension");

	/* the same type apart, and a second server_name */
	typical_exts(&gx, "d.example");
	ext(&gx, 0x002b, NULL, 0);
	hello(&gx, &gb);
	check_bad_at(gb.b, gb.n, gb.n - 3, HELLO_BAD, "duplicate extension");
	typical_exts(&gx, "d.example");
	ext_sni(&gx, "e.example", 9);
	hello(&gx, &gb);
	check_bad_at(gb.b, gb.n, gb.n - 9 - 9 + 1, HELLO_BAD,
	    "duplicate extension");
}

/* At most CLIENTHELLO_EXTENSIONS_MAX extensions. */
static void
test_many_extensions(void **state)
{
	gx.n = 0;
	ext_sni(&gx, "m.example", 9);
	for (unsigned int i = 1; i < CLIENTHELLO_EXTENSIONS_MAX; i++)
		ext(&gx, 0x1000 + i, NULL, 0);
	hello(&gx, &gb);
	check_ok(gb.b, gb.n, "m.example", false);

	/* one more: refused at the length of the last one allowed */
	ext(&gx, 0x2000, NULL, 0);
	hello(&gx, &gb);
	check_bad_at(gb.b, gb.n, gb.n - 4 - 1, HELLO_BAD,
	    "too many extensions");
}

/* server_name: one host_name, 1..255 bytes, no NUL, filling the list. */
static void
test_server_name(void **state)
{
	static const size_t	 lens[] = { 1, 2, 254, 255, 256, 300 };
	char			 name[300 + 1];
	size_t			 sni_at;

	memset(name, 'x', sizeof(name));

	/* 1 to 255 bytes are fine; more is refused at the extension length */
	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		size_t	 n = lens[i];

		gx.n = 0;
		ext_sni(&gx, name, n);
		hello(&gx, &gb);
		if (n <= 255) {
			name[n] = '\0';
			check_ok(gb.b, gb.n, name, false);
			name[n] = 'x';
		} else
			check_bad_at(gb.b, gb.n, OFF_EXTS + 3, HELLO_BAD,
			    "bad server_name length");
	}

	/* NUL in the name, anywhere */
	for (size_t at = 0; at < 5; at++) {
		char	 nul[] = "a.b.c";

		nul[at] = '\0';
		gx.n = 0;
		ext_sni(&gx, nul, 5);
		hello(&gx, &gb);
		check_bad_at(gb.b, gb.n, OFF_EXTS + 9 + at, HELLO_BAD,
		    "NUL in host_name");
	}

	/* an empty host_name: the extension is too short for a name; alone
	 * in its block, the block already is (told by the type) */
	gx.n = 0;
	ext_sni(&gx, "", 0);
	ext(&gx, 0x0017, NULL, 0);
	hello(&gx, &gb);
	check_bad_at(gb.b, gb.n, OFF_EXTS + 3, HELLO_BAD,
	    "bad server_name length");
	gx.n = 0;
	ext_sni(&gx, "", 0);
	hello(&gx, &gb);
	check_bad_at(gb.b, gb.n, OFF_EXTS + 1, HELLO_BAD,
	    "bad server_name length");

	/* two host_names: the first must fill the list */
	gx.n = 0;
	put16(&gx, 0);
	put16(&gx, 2 + 2 * (3 + 9));
	put16(&gx, 2 * (3 + 9));
	put8(&gx, 0);
	put16(&gx, 9);
	put(&gx, "a.example", 9);
	put8(&gx, 0);
	put16(&gx, 9);
	put(&gx, "b.example", 9);
	hello(&gx, &gb);
	check_bad_at(gb.b, gb.n, OFF_EXTS + 8, HELLO_BAD,
	    "more than one server name");

	/* a name of another type */
	gx.n = 0;
	ext_sni(&gx, "a.example", 9);
	hello(&gx, &gb);
	sni_at = OFF_EXTS + 4;
	gb.b[sni_at + 2] = 1;
	check_bad_at(gb.b, gb.n, sni_at + 2, HELLO_BAD,
	    "unknown server name type");
	gb.b[sni_at + 2] = 0;

	/* the list length must be the extension's less 2 */
	gb.b[sni_at + 1]++;
	check_bad_at(gb.b, gb.n, sni_at + 1, HELLO_BAD, "bad server_name list");
	gb.b[sni_at + 1] -= 2;
	check_bad_at(gb.b, gb.n, sni_at + 1, HELLO_BAD, "bad server_name list");
	gb.b[sni_at + 1]++;
	gb.b[sni_at] = 1;
	check_bad_at(gb.b, gb.n, sni_at, HELLO_BAD, "bad server_name list");
	gb.b[sni_at] = 0;
	/* and the name's length the list's less 3 */
	gb.b[sni_at + 4]++;
	check_bad_at(gb.b, gb.n, sni_at + 4, HELLO_BAD, "bad host_name length");
	gb.b[sni_at + 4] -= 2;
	check_bad_at(gb.b, gb.n, sni_at + 4, HELLO_BAD,
	    "more than one server name");
	gb.b[sni_at + 4]++;
	check_ok(gb.b, gb.n, "a.example", false);
}

/* Garbage after a valid record header: refused within a few bytes. */
static void
test_garbage(void **state)
{
	struct clienthello	 ch;
	const char		*why;
	uint32_t		 x = 12345;
	size_t			 bad = 0;

	for (int round = 0; round < 2000; round++) {
		uint8_t	 g[64] = { 0x16, 0x03, 0x01, 0x00, 0x3b };
		size_t	 first = 0;

		for (size_t i = 5; i < sizeof(g); i++) {
			x = x * 1103515245u + 12345u;
			g[i] = (uint8_t)(x >> 16);
		}
		for (size_t k = 0; k <= sizeof(g); k++) {
			enum hello_result r = peek(g, k, &ch, &why);

			if (r == HELLO_INCOMPLETE) {
				assert_int_equal(first, 0);
				continue;
			}
			assert_int_equal(r, HELLO_BAD);
			if (first == 0)
				first = k;
		}
		bad += first > 0;
	}
	/* the type byte alone refuses 255 in 256 */
	assert_true(bad > 1900);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_real),
		cmocka_unit_test(test_real_refragmented),
		cmocka_unit_test(test_no_sni),
		cmocka_unit_test(test_synthetic_ok),
		cmocka_unit_test(test_not_tls),
		cmocka_unit_test(test_record_header),
		cmocka_unit_test(test_message_header),
		cmocka_unit_test(test_data_after),
		cmocka_unit_test(test_interleaved),
		cmocka_unit_test(test_many_records),
		cmocka_unit_test(test_longest),
		cmocka_unit_test(test_legacy_version),
		cmocka_unit_test(test_lengths),
		cmocka_unit_test(test_extensions_block),
		cmocka_unit_test(test_extension_leftover),
		cmocka_unit_test(test_duplicate_extension),
		cmocka_unit_test(test_many_extensions),
		cmocka_unit_test(test_server_name),
		cmocka_unit_test(test_garbage),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
